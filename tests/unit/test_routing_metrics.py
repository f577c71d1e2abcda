"""Router metrics (RouteLLM's APGR and CPT), folds, training, model files, and the rule classifier.

Pure: synthetic data and synthetic embeddings, no litellm, no torch.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from costkit_litellm.routing.classifiers import (
    Classifier,
    Decision,
    EmbeddingRequired,
    ModelFileError,
    OutcomeDataError,
)
from costkit_litellm.routing.cli import add_router_parser, run_router
from costkit_litellm.routing.data import Outcomes, load_outcomes
from costkit_litellm.routing.evaluate import (
    cross_validate,
    evaluate_scores,
    fixed,
    group_folds,
    metrics,
    oracle_curve,
    random_folds,
    random_router,
    random_scores,
    sweep,
)
from costkit_litellm.routing.learned import FallbackClassifier, LearnedClassifier, load_model
from costkit_litellm.routing.rules import LengthClassifier, RuleClassifier
from costkit_litellm.routing.train import embed_prompts, fit_logistic, train


def synthetic(n: int = 20_000, seed: int = 7) -> Outcomes:
    """Independent outcomes: weak right 60% of the time, strong 80%."""
    rng = np.random.default_rng(seed)
    return Outcomes(
        prompts=tuple(f"question {i}" for i in range(n)),
        weak_correct=rng.random(n) < 0.6,
        strong_correct=rng.random(n) < 0.8,
        groups=tuple(f"g{i % 10}" for i in range(n)),
    )


def learnable(n: int = 1_200, dims: int = 16, seed: int = 3) -> tuple[Outcomes, np.ndarray]:
    """Outcomes whose premium gain depends on the first embedding dimension (a learnable signal)."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dims))
    hard = vectors[:, 0] > 0.3
    weak = np.where(hard, rng.random(n) < 0.3, rng.random(n) < 0.9)
    strong = np.where(hard, rng.random(n) < 0.85, rng.random(n) < 0.92)
    prompts = tuple(f"prompt {i} " + "x" * (i % 50) for i in range(n))
    data = Outcomes(prompts, weak, strong, tuple(f"s{i % 6}" for i in range(n)))
    return data, vectors


class TestSweep:
    def test_sweep_has_eleven_points_from_all_premium_to_none(self) -> None:
        """The default sweep has 11 thresholds, from 100% premium calls down to 0%."""
        data = synthetic(1_000)
        curve = sweep(random_scores(1_000, 0), data.weak_correct, data.strong_correct)
        assert len(curve.shares) == 11
        assert curve.shares[0] == 0.0 and curve.shares[-1] == 1.0
        assert curve.accuracies[0] == pytest.approx(data.weak_correct.mean())
        assert curve.accuracies[-1] == pytest.approx(data.strong_correct.mean())

    def test_linear_curve_has_apgr_one_half(self) -> None:
        """Ten distinct scores, weak always wrong, strong always right: a straight line, APGR 0.5, CPT(50%) 50%."""
        weak, strong = np.zeros(10, dtype=bool), np.ones(10, dtype=bool)
        curve = sweep(np.arange(10.0), weak, strong)
        assert np.allclose(curve.shares, np.linspace(0, 1, 11))
        result = metrics(curve, 0.0, 1.0)
        assert result.apgr == pytest.approx(0.5)
        assert result.cpt50 == pytest.approx(0.5)

    def test_known_curve_gives_known_metrics(self) -> None:
        """Strong right only on the five top-scored prompts: APGR 0.75, CPT(50%) 25%, CPT(80%) 40%, 95% at 47.5%."""
        weak = np.zeros(10, dtype=bool)
        strong = np.arange(10) >= 5
        result, _ = evaluate_scores(np.arange(10.0), Outcomes(tuple("abcdefghij"), weak, strong, ("g",) * 10))
        assert result.apgr == pytest.approx(0.75)
        assert result.cpt50 == pytest.approx(0.25)
        assert result.cpt80 == pytest.approx(0.40)
        assert result.share_for_95 == pytest.approx(0.475)

    def test_constant_scores_are_as_good_as_random(self) -> None:
        """A router with one score for everything (duplicate thresholds) evaluates without error to APGR 0.5."""
        data = synthetic(2_000)
        result, _ = evaluate_scores(np.ones(2_000), data)
        assert result.apgr == pytest.approx(0.5)


class TestReferenceRouters:
    def test_random_router_scores_about_one_half(self) -> None:
        """The random router's APGR is 0.50 within sampling noise."""
        data = synthetic()
        result, _ = evaluate_scores(random_scores(len(data), 0), data)
        assert result.apgr == pytest.approx(0.5, abs=0.03)

    def test_oracle_exceeds_one(self) -> None:
        """The oracle beats the premium model with few premium calls, so its APGR exceeds 1."""
        data = synthetic()
        curve = oracle_curve(data.weak_correct, data.strong_correct)
        result = metrics(curve, data.weak_correct.mean(), data.strong_correct.mean())
        assert result.apgr > 1.0
        assert result.share_for_95 < 0.2

    def test_perfect_inverse_router_is_worse_than_random(self) -> None:
        """Scoring by the negated premium gain sends premium exactly the wrong prompts: APGR below 0.5."""
        data = synthetic()
        gain = data.strong_correct.astype(float) - data.weak_correct.astype(float)
        assert evaluate_scores(-gain, data)[0].apgr < 0.5
        assert evaluate_scores(gain, data)[0].apgr > 1.0


class TestFolds:
    def test_random_folds_partition_rows_and_keep_repeats_together(self) -> None:
        """Random folds test every row once, and a repeated prompt never sits on both sides."""
        prompts = [f"p{i % 700}" for i in range(1_000)]
        folds = random_folds(prompts, 5, seed=1)
        tested = np.concatenate([test for _, test in folds])
        assert sorted(tested.tolist()) == list(range(1_000))
        for train_rows, test_rows in folds:
            assert not {prompts[i] for i in train_rows} & {prompts[i] for i in test_rows}

    def test_folds_are_deterministic_given_a_seed(self) -> None:
        """The same seed gives the same folds; another seed gives others."""
        prompts = [f"p{i}" for i in range(200)]
        a, b, c = (random_folds(prompts, 5, s) for s in (3, 3, 4))
        assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
        assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c, strict=True))

    def test_group_folds_hold_out_whole_groups(self) -> None:
        """Grouped folds never split a group between training and test rows."""
        groups = [f"subject{i % 13}" for i in range(1_300)]
        for train_rows, test_rows in group_folds(groups, 4, seed=0):
            assert not {groups[i] for i in train_rows} & {groups[i] for i in test_rows}

    def test_cross_validate_reports_every_router_and_the_oracle(self) -> None:
        """Cross-validation returns one result per router plus the oracle, one entry per fold."""
        data = synthetic(3_000)
        results = cross_validate(
            data, {"random": random_router, "constant": fixed(np.ones(3_000))}, random_folds(data.prompts, 3, 0)
        )
        assert [r.name for r in results] == ["random", "constant", "oracle"]
        assert all(len(r.folds) == 3 for r in results)
        assert results[2].mean("apgr") > 1.0


class TestTraining:
    def test_logistic_regression_reaches_a_stationary_point(self) -> None:
        """Newton's method ends where the regularised gradient is zero."""
        rng = np.random.default_rng(0)
        x = rng.normal(size=(500, 5))
        y = (x[:, 0] + rng.normal(size=500) > 0).astype(float)
        w, b = fit_logistic(x, y, l2=2.0)
        p = 1 / (1 + np.exp(-(x @ w + b)))
        assert np.allclose(x.T @ (p - y) + 2.0 * w, 0, atol=1e-6)
        assert abs(np.sum(p - y)) < 1e-6

    def test_training_is_deterministic_given_a_seed(self) -> None:
        """Training twice with the same data and seed gives the same weights and thresholds."""
        data, vectors = learnable()
        a = train(data, embeddings=vectors, seed=5)
        b = train(data, embeddings=vectors, seed=5)
        assert np.array_equal(a.layers[0].weights, b.layers[0].weights)
        assert a.thresholds == b.thresholds
        assert {k: v for k, v in a.training.items() if k != "created"} == {
            k: v for k, v in b.training.items() if k != "created"
        }

    def test_trained_model_learns_the_signal(self) -> None:
        """A model trained on a learnable signal routes held-out prompts far better than random."""
        data, vectors = learnable(2_000)
        model = train(data.subset(np.arange(1_500)), embeddings=vectors[:1_500], seed=0)
        held_out = data.subset(np.arange(1_500, 2_000))
        scores = model.scores(held_out.prompts, vectors[1_500:])
        assert evaluate_scores(scores, held_out)[0].apgr > 0.75
        assert model.training["inner_cv_apgr"] > 0.7

    def test_target_premium_share_sets_the_threshold(self) -> None:
        """A target premium share of 30% gives a threshold that sends about 30% of training prompts to premium."""
        data, vectors = learnable()
        model = train(data, embeddings=vectors, seed=0, target_premium_share=0.3)
        share = np.mean(model.scores(data.prompts, vectors) >= model.threshold)
        assert share == pytest.approx(0.3, abs=0.01)
        assert model.thresholds["target_premium_share"] == 0.3

    def test_embeddings_are_computed_once_and_cached(self, tmp_path: Path) -> None:
        """A second embed of the same prompts (or a subset) is read from the cache, not recomputed."""

        class CountingEmbedder:
            name = "test/counting"
            calls = 0

            def embed_sync(self, texts: list[str]) -> np.ndarray:
                CountingEmbedder.calls += len(texts)
                return np.array([[len(t), 1.0, t.count("a")] for t in texts], dtype=np.float32)

            async def embed(self, texts: list[str]) -> np.ndarray:
                return self.embed_sync(texts)

        embedder = CountingEmbedder()
        first = embed_prompts(embedder, ["a", "bb", "a"], tmp_path)
        again = embed_prompts(embedder, ["bb", "a"], tmp_path)
        assert CountingEmbedder.calls == 2
        assert np.array_equal(again, first[[1, 0]])


class TestModelFile:
    def test_model_file_round_trip(self, tmp_path: Path) -> None:
        """A saved model loads back with the same scores, thresholds and metadata."""
        data, vectors = learnable()
        model = train(data, embeddings=vectors, seed=0)
        path = tmp_path / "router.json"
        model.save(path)
        loaded = load_model(path)
        assert np.array_equal(loaded.scores(data.prompts, vectors), model.scores(data.prompts, vectors))
        assert loaded.thresholds == json.loads(json.dumps(model.thresholds))
        assert loaded.training["seed"] == 0

    def test_missing_model_file_names_the_file(self, tmp_path: Path) -> None:
        """Loading a model file that does not exist raises ModelFileError naming it."""
        path = tmp_path / "nowhere.json"
        with pytest.raises(ModelFileError, match=r"nowhere\.json") as info:
            LearnedClassifier.load(path)
        assert info.value.path == str(path)

    @pytest.mark.parametrize(
        ("content", "problem"),
        [
            ("{not json", "not valid JSON"),
            ('{"format": "something-else"}', "not a costkit router model"),
            ('{"format": "costkit-router-model", "version": 9}', "version"),
        ],
    )
    def test_corrupt_model_file_names_the_file(self, tmp_path: Path, content: str, problem: str) -> None:
        """A corrupt or foreign model file raises ModelFileError naming the file and the problem."""
        path = tmp_path / "broken.json"
        path.write_text(content)
        with pytest.raises(ModelFileError, match=problem) as info:
            load_model(path)
        assert "broken.json" in str(info.value)

    def test_inconsistent_shapes_are_refused(self, tmp_path: Path) -> None:
        """A model whose weights do not fit its feature spec is refused at load, naming the file."""
        data, vectors = learnable()
        document = train(data, embeddings=vectors, seed=0).to_json()
        document["dimensions"] = 384
        path = tmp_path / "mismatch.json"
        path.write_text(json.dumps(document))
        with pytest.raises(ModelFileError, match=r"mismatch\.json.*do not fit"):
            load_model(path)

    def test_model_for_another_embedder_is_refused(self, tmp_path: Path) -> None:
        """A model trained on one embedder's vectors is refused with another embedder, naming the file."""
        data, vectors = learnable()
        path = tmp_path / "router.json"
        train(data, embeddings=vectors, seed=0).save(path)

        class OtherEmbedder:
            name = "openai/text-embedding-3-small"

            async def embed(self, texts: list[str]) -> np.ndarray:
                raise AssertionError("not called")

        with pytest.raises(ModelFileError, match=r"router\.json.*text-embedding-3-small"):
            LearnedClassifier.load(path, OtherEmbedder())


class TestLearnedClassifier:
    def test_scores_a_precomputed_embedding_without_an_embedder(self, tmp_path: Path) -> None:
        """Given the request's embedding, the learned classifier needs no embedder (no torch)."""
        data, vectors = learnable()
        path = tmp_path / "router.json"
        train(data, embeddings=vectors, seed=0).save(path)
        classifier = LearnedClassifier.load(path)
        assert isinstance(classifier, Classifier) and classifier.needs_embedding
        decision = classifier.score(data.prompts[0], vectors[0])
        assert 0.0 <= decision.score <= 1.0
        assert "threshold" in decision.reason

    def test_without_an_embedding_it_raises_a_typed_error(self) -> None:
        """Without an embedding or an embedder, scoring raises EmbeddingRequired."""
        data, vectors = learnable()
        classifier = LearnedClassifier(train(data, embeddings=vectors, seed=0))
        with pytest.raises(EmbeddingRequired):
            classifier.score("what is 2 + 2?")

    def test_fallback_uses_rules_and_warns_once(self, caplog: pytest.LogCaptureFixture) -> None:
        """With no embedding available, the fallback classifier answers with the rules and logs one warning."""
        data, vectors = learnable()
        classifier = FallbackClassifier(LearnedClassifier(train(data, embeddings=vectors, seed=0)), RuleClassifier())
        with caplog.at_level(logging.WARNING):
            first = classifier.score("Explain why the sky is blue, step by step.")
            classifier.score("hello")
        assert first == Decision(
            RuleClassifier().score("Explain why the sky is blue, step by step.").score,
            RuleClassifier().score("Explain why the sky is blue, step by step.").reason + " (fallback: no embedding)",
        )
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        assert classifier.score(data.prompts[0], vectors[0]).reason.startswith("learned")


class TestRules:
    def test_reasons_name_the_signals(self) -> None:
        """The rule classifier's reason lists what fired: a code block, reasoning cues, math."""
        rules = RuleClassifier()
        assert "code block" in rules.score("Fix this:\n```python\ndef f(x):\n    return x\n```").reason
        assert (
            "3 reasoning cues"
            in rules.score("Explain why the sky is blue. Compare it with sunsets, step by step.").reason
        )
        assert "math signal" in rules.score("Solve for x: 3x^2 + 2 = 14").reason
        assert rules.score("hi").reason == "short plain prompt"

    def test_signals_move_the_score_the_right_way(self) -> None:
        """Code and reasoning raise the score; an extraction task lowers it."""
        rules = RuleClassifier()
        plain = rules.score("Tell me about the weather in Paris in spring.").score
        assert rules.score("Explain why, step by step: tell me about the weather in Paris.").score > plain
        assert rules.score("```js\nconst x = 1;\n```").score > plain
        assert rules.score("Extract the city names from this text as JSON: Paris in spring.").score < plain

    def test_rules_are_deterministic_and_bounded(self) -> None:
        """The same prompt always gets the same decision, with a score in (0, 1)."""
        rules = RuleClassifier()
        prompt = "Prove that there are infinitely many primes. " * 40
        decisions = {rules.score(prompt) for _ in range(3)}
        assert len(decisions) == 1
        assert 0.0 < decisions.pop().score < 1.0
        assert "long" in rules.score("word " * 3_000).reason

    def test_length_classifier_is_monotone(self) -> None:
        """The prompt-length reference scores longer prompts higher."""
        length = LengthClassifier()
        assert length.score("short").score < length.score("much longer " * 50).score


class TestData:
    def test_routellm_csv_directory_with_exclusions(self, tmp_path: Path) -> None:
        """RouteLLM CSVs load weak then strong columns, the subject from the file name, contaminated prompts out."""
        header = "prompt,mistralai/Mixtral-8x7B-Instruct-v0.1,gpt-4-1106-preview\n"
        (tmp_path / "mmlu_anatomy.csv").write_text(header + '"What is\na bone?",True,False\nB,False,True\n')
        (tmp_path / "mmlu_virology.csv").write_text(header + "C,False,False\n")
        (tmp_path / "contaminated_prompts.jsonl").write_text(
            json.dumps({"train_prompt": "x", "eval_prompt": "B", "train_idx": 1, "eval_idx": 1}) + "\n"
        )
        data = load_outcomes(tmp_path, exclude=tmp_path / "contaminated_prompts.jsonl")
        assert data.prompts == ("What is\na bone?", "C")
        assert data.weak_correct.tolist() == [True, False]
        assert data.strong_correct.tolist() == [False, False]
        assert data.groups == ("anatomy", "virology")

    def test_jsonl_outcomes(self, tmp_path: Path) -> None:
        """JSONL rows carry prompt, weak_correct, strong_correct and an optional group."""
        path = tmp_path / "traffic.jsonl"
        path.write_text(
            '{"prompt": "a", "weak_correct": true, "strong_correct": true, "group": "search"}\n'
            '{"prompt": "b", "weak_correct": 0, "strong_correct": 1}\n'
        )
        data = load_outcomes(path)
        assert data.groups == ("search", "traffic")
        assert data.premium_gain.tolist() == [False, True]

    def test_bad_rows_name_file_and_line(self, tmp_path: Path) -> None:
        """A malformed outcome row raises OutcomeDataError naming the file and line."""
        path = tmp_path / "bad.jsonl"
        path.write_text('{"prompt": "a", "weak_correct": true, "strong_correct": true}\n{"prompt": "b"}\n')
        with pytest.raises(OutcomeDataError, match=r"bad\.jsonl: line 2: missing 'weak_correct'"):
            load_outcomes(path)


class TestCli:
    def test_eval_prints_a_markdown_table(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """``router eval`` on JSONL prints one table row per router with APGR and CPT columns."""
        rng = np.random.default_rng(0)
        path = tmp_path / "outcomes.jsonl"
        with path.open("w") as handle:
            for i in range(400):
                hard = i % 3 == 0
                prompt = ("Explain why, step by step: " if hard else "") + f"question {i}"
                weak = bool(rng.random() < (0.3 if hard else 0.9))
                handle.write(json.dumps({"prompt": prompt, "weak_correct": weak, "strong_correct": True}) + "\n")
        parser = argparse.ArgumentParser()
        add_router_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["router", "eval", "--data", str(path), "--router", "rules", "--router", "length"])
        assert run_router(args) == 0
        out = capsys.readouterr().out
        assert "| router | APGR | CPT(50%) | CPT(80%) |" in out
        rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
        assert {"random", "rules", "prompt length", "oracle"} <= rows.keys()
        assert float(rows["rules"].split("|")[2].split("±")[0]) > 0.6

    def test_missing_data_exits_one(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """``router eval`` on a path that does not exist exits 1 naming it."""
        parser = argparse.ArgumentParser()
        add_router_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["router", "eval", "--data", str(tmp_path / "none.csv"), "--router", "rules"])
        assert run_router(args) == 1
        assert "none.csv" in capsys.readouterr().err
