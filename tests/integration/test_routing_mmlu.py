"""The learned router on real data: RouteLLM's MMLU outcomes with the real all-MiniLM-L6-v2.

Needs ``../shared/data/routellm-mmlu`` beside the project and skips with the reason when it is
absent (a user's clone has no ``../shared``). Embeddings are cached in ``~/.cache/costkit`` so
reruns embed nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from costkit_litellm.routing.data import Outcomes, default_exclusion, load_outcomes
from costkit_litellm.routing.evaluate import evaluate_scores, random_folds
from costkit_litellm.routing.learned import LearnedClassifier, load_model
from costkit_litellm.routing.train import default_cache_dir, embed_prompts, train

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "routellm-mmlu"
TRAIN_ROWS, TEST_ROWS = 4_000, 1_000

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"no RouteLLM MMLU outcomes at {DATA}")


@pytest.fixture(scope="module")
def sample() -> tuple[Outcomes, Outcomes, np.ndarray, np.ndarray]:
    """A seeded sample of distinct prompts: training rows and held-out rows, with their embeddings."""
    from costkit_litellm.embeddings.local import LocalEmbedder

    data = load_outcomes(DATA, exclude=default_exclusion(DATA))
    # Disjoint by distinct prompt: fold 0 of a 5-fold split is held out, the rest is training.
    train_rows, test_rows = random_folds(data.prompts, 5, seed=11)[0]
    rng = np.random.default_rng(11)
    train_rows = np.sort(rng.choice(train_rows, TRAIN_ROWS, replace=False))
    test_rows = np.sort(rng.choice(test_rows, TEST_ROWS, replace=False))
    # Embed only the sampled prompts: a fresh machine (CI) has no embedding cache.
    embedder = LocalEmbedder()
    train_vectors = embed_prompts(embedder, [data.prompts[i] for i in train_rows], default_cache_dir())
    test_vectors = embed_prompts(embedder, [data.prompts[i] for i in test_rows], default_cache_dir())
    return data.subset(train_rows), data.subset(test_rows), train_vectors, test_vectors


class TestLearnedRouterOnMmlu:
    def test_learned_router_beats_prompt_length_on_held_out_prompts(
        self, sample: tuple[Outcomes, Outcomes, np.ndarray, np.ndarray]
    ) -> None:
        """Trained on 4,000 MMLU prompts, the learned router's APGR on 1,000 held-out prompts beats prompt length."""
        train_data, test_data, train_vectors, test_vectors = sample
        model = train(train_data, embeddings=train_vectors, seed=0)
        learned = evaluate_scores(model.scores(test_data.prompts, test_vectors), test_data)[0]
        length = evaluate_scores([len(p) for p in test_data.prompts], test_data)[0]
        assert learned.apgr > length.apgr + 0.03, (learned.apgr, length.apgr)
        assert learned.apgr > 0.6

    def test_saved_model_scores_a_prompt_with_its_own_embedding(
        self, sample: tuple[Outcomes, Outcomes, np.ndarray, np.ndarray], tmp_path: Path
    ) -> None:
        """A saved model, loaded with the local embedder, scores a raw prompt as it scores its precomputed embedding."""
        from costkit_litellm.embeddings.local import LocalEmbedder

        train_data, test_data, train_vectors, test_vectors = sample
        path = tmp_path / "router.json"
        train(train_data, embeddings=train_vectors, seed=0, l2_grid=(10.0,)).save(path)
        classifier = LearnedClassifier.load(path, LocalEmbedder())
        prompt = test_data.prompts[0]
        embedded = classifier.score(prompt)
        given = classifier.score(prompt, test_vectors[0])
        assert embedded.score == pytest.approx(given.score, abs=1e-4)
        assert load_model(path).training["rows"] == TRAIN_ROWS
