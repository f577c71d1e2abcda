"""Tiered routing: which requests need the premium tier, and how well a router decides it.

- ``classifiers``: the ``Classifier`` protocol (``score(prompt, embedding) -> Decision``) and the
  routing error tree;
- ``rules``: the zero-setup rule-based classifier (length, code, math, reasoning cues, extraction);
- ``learned``: logistic regression on a shared sentence embedding, loaded from a JSON model file;
- ``data``: outcome data (RouteLLM's per-prompt CSVs, or JSONL of the same meaning);
- ``train`` / ``evaluate`` / ``plot``: offline training, RouteLLM's metrics (APGR, CPT) with
  cross-validation, and the cost-quality curve;
- ``cli``: ``costkit router train`` and ``costkit router eval``.

Nothing here imports litellm or torch: LiteLLM's own ``complexity_router`` is scored through
``costkit_litellm.litellm_adapter.complexity_anchor``, and the local embedder loads torch lazily.
"""
