"""The figures of the classifier comparison (``retina-codec classify-stats``): layer statistics, class
top-mode interventions and the Jacobian-chain masks of each mode source."""

from __future__ import annotations

from pathlib import Path

import torch

from ..classifiers.comparison import ClassifierComparison
from .masks import plot_mode_masks
from .stats import plot_intervention_curves, plot_layer_stats

__all__ = ["write_comparison_figures"]


def write_comparison_figures(cmp: ClassifierComparison, out: str | Path) -> list[Path]:
    """``layer_stats.png``, ``interventions.png`` (with sweeps) and ``masks_<source>.png`` into ``out``;
    returns their paths."""
    out = Path(out)
    res, images, name = cmp.result, cmp.images, cmp.name
    written = [out / "layer_stats.png"]
    plot_layer_stats(res.stats, written[0], labels=res.aliases,
                     title=f"{name} on {images.source}: contributions vs activations ({len(images)} images)")
    if res.sweeps:
        written.append(out / "interventions.png")
        plot_intervention_curves(res.sweeps, written[-1],
                                 title=f"{name}, layer {res.mode_layer}: class top-mode interventions")
    for src, mm in res.masks.items():
        imgs = [images.x[torch.from_numpy(rows)].numpy() for rows in mm.image_index]
        titles = [[f"{images.class_names[int(images.y[i])]}" for i in rows] for rows in mm.image_index]
        written.append(out / f"masks_{src}.png")
        plot_mode_masks(imgs, mm.masks, written[-1],
                        row_titles=[f"class {images.class_names[int(c)]}\nmode {int(m)}"
                                    for c, m in zip(mm.classes, mm.modes)],
                        col_titles=titles, title=f"{src} modes at {res.mode_layer}: Jacobian-chain masks")
    return written
