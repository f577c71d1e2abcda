"""The semantic-cache verification stage: guards on hand-made traps, verdicts, and the shipped pair model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from costkit_litellm.cache.verify import (
    DEFAULT_MODEL_PATH,
    GUARDS,
    PairModelError,
    Verifier,
    VerifierSettings,
    analyse,
    guard_refusal,
    load_pair_model,
    pair_features,
)

TRAPS = Path(__file__).resolve().parents[2] / "bench" / "data" / "cache_traps.jsonl"
ROWS = [json.loads(line) for line in TRAPS.read_text(encoding="utf-8").splitlines() if line.strip()]
TRAP_ROWS = [r for r in ROWS if not r["duplicate"]]
PARAPHRASE_ROWS = [r for r in ROWS if r["duplicate"]]


def _unit(seed: int, near: np.ndarray | None = None, noise: float = 0.05) -> np.ndarray:
    """A random unit vector, or one close to ``near``."""
    rng = np.random.default_rng(seed)
    vector = rng.standard_normal(384).astype(np.float32)
    if near is not None:
        vector = near + noise * vector / np.linalg.norm(vector)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


class TestGuards:
    @pytest.mark.parametrize("row", TRAP_ROWS, ids=lambda r: r["b"][:40])
    def test_each_trap_is_refused(self, row: dict[str, str]) -> None:
        """Every hand-made trap (negation, amounts, direction, dates, comparison) is refused by a guard."""
        assert guard_refusal(analyse(row["a"]), analyse(row["b"])) is not None

    @pytest.mark.parametrize("row", PARAPHRASE_ROWS, ids=lambda r: r["b"][:40])
    def test_each_paraphrase_passes_the_guards(self, row: dict[str, str]) -> None:
        """Every hand-made paraphrase passes all the guards (they refuse traps, not rewordings)."""
        assert guard_refusal(analyse(row["a"]), analyse(row["b"])) is None

    def test_the_trap_set_covers_every_kind(self) -> None:
        """The trap file holds about forty traps over five kinds and about twenty paraphrases."""
        kinds = {r["kind"] for r in TRAP_ROWS}
        assert kinds == {"negation", "numbers", "direction", "dates", "comparison"}
        assert len(TRAP_ROWS) >= 40
        assert len(PARAPHRASE_ROWS) >= 20

    @pytest.mark.parametrize(
        ("a", "b", "guard"),
        [
            ("Is shipping free on orders over $100?", "Is shipping free on orders over $500?", "numbers"),
            ("What is the price in dollars?", "What is the price in euros?", "currency"),
            ("Is the museum open on Monday?", "Is the museum open on Friday?", "dates"),
            ("Can I eat eggs?", "Can't I eat eggs?", "negation"),
            ("Is it safe to swim here?", "Is it unsafe to swim here?", "antonym"),
            ("Are prices above 10 taxed?", "Are prices below 10 taxed?", "comparison"),
            ("Send money from Alice to Bob", "Send money from Bob to Alice", "order"),
            (
                "Which breed is calmer, a Labrador or a Poodle?",
                "Which breed is calmer, a Labrador or a Beagle?",
                "names",
            ),
        ],
    )
    def test_each_guard_names_itself(self, a: str, b: str, guard: str) -> None:
        """A refusal names the guard that refused and explains what differs."""
        refusal = guard_refusal(analyse(a), analyse(b))
        assert refusal is not None
        assert refusal[0] == guard
        assert refusal[1]

    def test_amounts_are_normalised(self) -> None:
        """'2,000', '2k' and 'two thousand'-style spellings of the same amount do not trip the number guard."""
        assert guard_refusal(analyse("Phones under 15k?"), analyse("Phones under 15,000?")) is None
        assert guard_refusal(analyse("Lose weight in ten days"), analyse("Lose weight in 10 days")) is None

    def test_a_direction_word_between_reordered_names_matters(self) -> None:
        """Reordering names without a direction word between them (A or B / B or A) is not refused."""
        assert (
            guard_refusal(analyse("Which is better, Python or Java?"), analyse("Which is better, Java or Python?"))
            is None
        )


class TestVerdicts:
    def test_low_similarity_is_refused_first(self) -> None:
        """A candidate under the similarity threshold is refused with reason 'similarity' and its cosine."""
        verifier = Verifier(VerifierSettings(similarity_threshold=0.9, classifier=False))
        verdict = verifier.verify("How do I reset my password?", _unit(1), "How do I bake bread?", _unit(2))
        assert (verdict.ok, verdict.reason) == (False, "similarity")
        assert verdict.similarity < 0.9

    def test_guard_refusal_is_the_reason(self) -> None:
        """A similar candidate with a different amount is refused with the guard's name as reason."""
        u = _unit(3)
        verifier = Verifier(VerifierSettings(similarity_threshold=0.5, classifier=False))
        verdict = verifier.verify("Orders over £50?", u, "Orders over £100?", _unit(4, near=u))
        assert (verdict.ok, verdict.reason, verdict.score) == (False, "numbers", 0.0)
        assert "50" in verdict.detail

    def test_guards_can_be_turned_off(self) -> None:
        """With guards off (and no classifier) only the similarity decides."""
        u = _unit(5)
        verifier = Verifier(VerifierSettings(similarity_threshold=0.5, guards=False, classifier=False))
        verdict = verifier.verify("Orders over £50?", u, "Orders over £100?", _unit(6, near=u))
        assert (verdict.ok, verdict.reason) == (True, "accepted")

    def test_a_disabled_guard_is_skipped(self) -> None:
        """A guard named in disabled_guards no longer refuses."""
        u = _unit(7)
        settings = VerifierSettings(similarity_threshold=0.5, classifier=False, disabled_guards=frozenset({"numbers"}))
        verdict = Verifier(settings).verify("Orders over £50?", u, "Orders over £100?", _unit(8, near=u))
        assert verdict.ok

    def test_unknown_guard_names_fail(self) -> None:
        """Disabling a guard that does not exist fails at construction, listing the known ones."""
        with pytest.raises(ValueError, match="numbres"):
            Verifier(VerifierSettings(classifier=False, disabled_guards=frozenset({"numbres"})))

    def test_classifier_score_decides_last(self) -> None:
        """The classifier refuses with reason 'classifier' when its score is under the threshold."""
        u = _unit(9)
        verifier = Verifier(VerifierSettings(similarity_threshold=0.0, classifier_threshold=1.0))
        verdict = verifier.verify("how do i learn to cook?", u, "how do i learn to swim?", _unit(10, near=u))
        assert (verdict.ok, verdict.reason) == (False, "classifier")
        assert 0.0 <= verdict.score < 1.0

    def test_identical_question_is_accepted_at_defaults(self) -> None:
        """The same question with the same embedding is served at the shipped defaults."""
        u = _unit(11)
        verdict = Verifier().verify("How do I reset my password?", u, "How do I reset my password?", u)
        assert (verdict.ok, verdict.reason) == (True, "accepted")
        assert verdict.score >= Verifier().classifier_threshold

    def test_a_looser_operating_point_lowers_the_thresholds(self) -> None:
        """max_wrong_hit_rate picks another calibrated point: more hits allowed, lower classifier threshold."""
        strict, loose = Verifier(), Verifier(VerifierSettings(max_wrong_hit_rate=0.05))
        assert loose.classifier_threshold < strict.classifier_threshold

    def test_an_operating_point_below_every_calibrated_one_fails(self) -> None:
        """Asking for fewer wrong hits than any calibrated point fails at construction, listing the known ones."""
        with pytest.raises(ValueError, match="no calibrated operating point"):
            Verifier(VerifierSettings(max_wrong_hit_rate=0.001))

    def test_defaults_come_from_the_shipped_model(self) -> None:
        """Unset thresholds take the values calibrated in pair_model.json."""
        model = load_pair_model()
        verifier = Verifier()
        assert verifier.similarity_threshold == model.similarity_threshold
        assert verifier.classifier_threshold == model.threshold


class TestPairModel:
    def test_shipped_model_loads_and_scores(self) -> None:
        """The shipped pair_model.json loads, fits the feature vector, and scores in [0, 1]."""
        model = load_pair_model()
        u = _unit(12)
        features = pair_features(analyse("a b c"), u, analyse("a b d"), _unit(13, near=u))
        assert features.shape == (model.inputs,)
        assert 0.0 <= model.score(features) <= 1.0
        assert "tune" in model.meta["trained_on"]

    def test_shipped_model_is_small(self) -> None:
        """The shipped weights stay a small file (a few hundred KB at most)."""
        assert DEFAULT_MODEL_PATH.stat().st_size < 400_000

    def test_corrupt_json_names_the_file(self, tmp_path: Path) -> None:
        """A truncated model file fails with PairModelError naming the file."""
        path = tmp_path / "pair_model.json"
        path.write_text(DEFAULT_MODEL_PATH.read_text(encoding="utf-8")[:1000], encoding="utf-8")
        with pytest.raises(PairModelError, match=str(path)):
            load_pair_model(path)

    def test_flipped_weights_fail_their_checksum(self, tmp_path: Path) -> None:
        """Weights altered inside valid JSON fail the checksum, naming the file and the array."""
        document = json.loads(DEFAULT_MODEL_PATH.read_text(encoding="utf-8"))
        b64 = document["arrays"]["w1"]["b64"]
        document["arrays"]["w1"]["b64"] = ("B" if b64[0] == "A" else "A") + b64[1:]
        path = tmp_path / "bad_model.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        with pytest.raises(PairModelError, match=r"bad_model\.json.*'w1'.*checksum"):
            load_pair_model(path)

    def test_other_format_is_refused(self, tmp_path: Path) -> None:
        """A JSON file that is not a pair model is refused, naming the file and the format found."""
        path = tmp_path / "other.json"
        path.write_text('{"format": "something-else"}', encoding="utf-8")
        with pytest.raises(PairModelError, match=r"other\.json.*something-else"):
            load_pair_model(path)

    def test_missing_file_names_the_file(self, tmp_path: Path) -> None:
        """A missing model file fails with PairModelError naming the file, when the classifier is on."""
        path = tmp_path / "absent.json"
        with pytest.raises(PairModelError, match=r"absent\.json"):
            Verifier(VerifierSettings(model_path=path))

    def test_without_classifier_no_model_is_read(self, tmp_path: Path) -> None:
        """With the classifier off the verifier needs no model file."""
        verifier = Verifier(VerifierSettings(classifier=False, model_path=tmp_path / "absent.json"))
        assert verifier.model is None
        assert set(GUARDS) >= {"numbers", "negation", "order"}
