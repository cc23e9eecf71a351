"""The image drift report that `driftlab drift --vision` (notebooks/drift_report_vision.ipynb)
writes under data/reports/: the latest check's most drifted columns, reference against current,
inputs (image quality) before outputs (what the champion answered), and example frames of both
sides, so that a person sees what "brightness drifted" looks like."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.settings import Settings
from pipelines.store import Store
from pipelines.vision.model import VisionModel
from pipelines.vision.monitoring import window_arrays
from pipelines.vision.retrain import load_stored_path


def most_drifted(rows: Sequence[Mapping[str, Any]], top: int) -> list[str]:
    """The check's columns to plot: drifted inputs, then drifted outputs, each by effect size,
    then the largest effects of the rest, `top` in all."""

    def rank(r: Mapping[str, Any]) -> tuple[bool, bool, float]:
        return (not r["drifted"], r["role"] != "feature", -(r["effect_size"] or 0.0))

    return [r["feature"] for r in sorted(rows, key=rank)][:top]


def current_frame(store: Store, model: VisionModel, window_size: int) -> dict[str, np.ndarray]:
    """The window's stored image features (the rows the check compared)."""
    return window_arrays(store.image_feature_window(model.name, limit=window_size))


def plot_columns(
    reference: Mapping[str, np.ndarray],
    current: Mapping[str, np.ndarray],
    roles: Mapping[str, str],
    names: Sequence[str],
    path: Path,
) -> Path:
    """One panel per column: histograms of a number, bar pairs of a category's shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4 * max(len(names), 1), 3))
    for ax, name in zip(np.atleast_1d(axes), names, strict=False):
        ref, cur = reference[name], current[name]
        if ref.dtype == object:
            classes = sorted({*ref.tolist(), *cur.tolist()}, key=str)
            x = np.arange(len(classes))
            for offset, values, label in ((-0.2, ref, "reference"), (0.2, cur, "current")):
                shares = [np.mean(values == c) if len(values) else 0.0 for c in classes]
                ax.bar(x + offset, shares, width=0.4, label=label)
            ax.set_xticks(x, [str(c) for c in classes], rotation=45)
        else:
            finite = [v[np.isfinite(v)] for v in (ref, cur)]
            ax.hist(finite, bins=20, density=True, label=["reference", "current"])
        ax.set_title(f"{name} ({'input' if roles.get(name) == 'feature' else 'output'})")
    np.atleast_1d(axes)[0].legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def example_frames(
    settings: Settings, store: Store, model: VisionModel, n: int, path: Path
) -> Path:
    """`n` of the champion's training images above `n` of the latest served ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, rows = store.vision_training_set(model.name, model.task, model.snapshot_id)
    originals = [r["image_ref"] for r in rows if r["split"] != "human"]
    step = max(len(originals) // max(n, 1), 1)
    sides = {
        "reference (training)": originals[::step][:n],
        "current (served)": store.recent_image_refs(model.name, n),
    }
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), squeeze=False)
    for row, (title, refs) in zip(axes, sides.items(), strict=True):
        row[0].set_title(title, loc="left", fontsize=9)
        for ax, ref in zip(row, [*refs, *[None] * n], strict=False):
            ax.axis("off")
            if ref is not None:
                ax.imshow(load_stored_path(settings.images_dir / ref))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
