"""The cost-quality curve: accuracy against the share of premium calls, one line per router.

Needs matplotlib (the optional ``plots`` extra); it is imported when a plot is drawn, never at
import time, and a missing matplotlib raises ``PlotUnavailable`` with the install hint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from costkit_litellm.routing.classifiers import RoutingError
from costkit_litellm.routing.evaluate import CvResult

_STYLES: dict[str, dict[str, Any]] = {
    "random": {"color": "grey", "linestyle": ":"},
    "oracle": {"color": "black", "linestyle": "--"},
}


class PlotUnavailable(RoutingError):
    """matplotlib is not installed."""


def plot_curves(results: Sequence[CvResult], path: str | Path, title: str = "Routing: cost vs quality") -> Path:
    """Draw every router's mean curve, with the economy-only and premium-only levels, to a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable("plots need matplotlib: pip install 'costkit-litellm[plots]'") from None
    figure, axes = plt.subplots(figsize=(8, 5.5), dpi=120)
    weak = strong = None
    for result in results:
        curve = result.mean_curve()
        style = _STYLES.get(result.name, {})
        label = f"{result.name} (APGR {result.mean('apgr'):.3f})"
        axes.plot(100 * curve.shares, 100 * curve.accuracies, marker=".", label=label, **style)
        weak, strong = result.mean("weak_accuracy"), result.mean("strong_accuracy")
    if weak is not None and strong is not None:
        axes.axhline(100 * weak, color="tab:grey", linewidth=0.8, linestyle="-.", label=f"economy only ({weak:.1%})")
        axes.axhline(100 * strong, color="tab:red", linewidth=0.8, linestyle="-.", label=f"premium only ({strong:.1%})")
    axes.set_xlabel("premium calls (%)")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target)
    plt.close(figure)
    return target
