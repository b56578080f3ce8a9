"""Class-selective modes of a classifier layer and their ablation / preservation curves (docs/definitions.md#interventions).

Protocol: modes are fitted on a layer's per-image vectors — E/I-split contributions ``(n, 2C)`` with the
CODEC SAE (K = 3·d latents, the classifier rule) and, as the paper's comparison, net activations
``(n, C)`` with the same SAE (:func:`~retina_codec.modes.activation_modes`). For every class, the mode
whose loadings correlate most with the class indicator is that class's *top mode*; its atom ranks the
layer's channels. Ablating (zeroing the top p % channels at every position) or preserving (zeroing all
others) is swept over p and measured as accuracy on the class (target) and on all other classes (off
target), each relative to the intact model; the summary is the selectivity
``(AUC_target − AUC_off)/AUC_off`` of :func:`~retina_codec.modes.intervention_sweep`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ClassifierError, ModesError
from ..modes import ModeDecomposer, activation_modes, class_correlations, intervention_sweep
from ..modes.interventions import SweepResult, accuracy_on, model_outputs
from ..stats.measures import net_channels
from .adapters import channel_dim

__all__ = ["ClassModeSweep", "fit_layer_modes", "top_class_modes", "class_mode_sweeps", "selectivity_summary",
           "DEFAULT_FRACTIONS"]

DEFAULT_FRACTIONS = tuple(float(p) for p in np.linspace(0.0, 1.0, 9))


@dataclass
class ClassModeSweep:
    """One class's top mode (``source`` contributions|activations) and its sweep (``kind`` ablate|preserve)."""

    source: str
    kind: str
    cls: int
    mode: int
    correlation: float
    sweep: SweepResult


def fit_layer_modes(vectors: np.ndarray, source: str, n_modes: int | None = None, seed: int = 0,
                    **decomposer_kwargs: Any) -> ModeDecomposer:
    """Fit the modes of one layer: ``vectors`` are E/I-split ``(n, 2C)`` (contributions: fitted as they are;
    activations: reduced to their net channel values ``(n, C)`` first). ``n_modes`` defaults to 3·d."""
    opts = {"kind": "codec", "center": True, "random_state": seed, "max_epochs": 150, "patience": 10,
            **decomposer_kwargs}
    if source == "contributions":
        x = np.asarray(vectors, dtype=np.float32)
        return ModeDecomposer(n_modes=n_modes or 3 * x.shape[1], **opts).fit(x)
    if source == "activations":
        a = net_channels(vectors).astype(np.float32)
        return activation_modes(a, reduce=None, n_modes=n_modes or 3 * a.shape[1], **opts)
    raise ClassifierError(f"source: expected 'contributions' or 'activations'; found {source!r}")


def top_class_modes(loadings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(classes, mode index per class, its correlation)``: the mode most correlated with each class.

    A class whose indicator no mode correlates with (every mode constant) gets mode 0 and r = −inf.
    """
    if np.ndim(loadings) == 2 and np.shape(loadings)[1] == 0:
        raise ModesError("loadings: the decomposition has no alive modes (every SAE latent stayed silent); "
                         "expected at least one column")
    r, classes = class_correlations(loadings, labels)
    r = np.nan_to_num(r, nan=-np.inf)
    best = r.argmax(0)
    return classes, best, r[best, np.arange(classes.size)]


def class_mode_sweeps(model: nn.Module, layer: str, x: torch.Tensor, labels: Any, decomposer: ModeDecomposer,
                      loadings: np.ndarray, loading_labels: Any, source: str,
                      kinds: Sequence[str] = ("ablate", "preserve"), classes: Sequence[int] | None = None,
                      fractions: Sequence[float] = DEFAULT_FRACTIONS, batch_size: int = 256) -> list[ClassModeSweep]:
    """Sweeps of each class's top mode at ``layer`` on the images ``x (n, ...)`` with ``labels (n,)``.

    ``loadings (m, n_modes)`` with ``loading_labels (m,)`` choose each class's top mode (the images the
    modes were fitted on; classes no mode correlates with are skipped); the interventions are measured on
    ``x``. ``source`` says whether the atoms are E/I-split contribution atoms (2C) or activation atoms (C).
    Classes the unmodified model never gets right on ``x`` (or whose other classes it never gets right) have
    no accuracy ratio and are skipped with a warning (e.g. an untrained network).
    """
    y = np.asarray(labels).reshape(-1)
    cls_all, best, corr = top_class_modes(loadings, np.asarray(loading_labels).reshape(-1))
    wanted = set(int(c) for c in (classes if classes is not None else cls_all))
    cdim = channel_dim(model, layer)
    ei = source == "contributions"
    out: list[ClassModeSweep] = []
    was = model.training
    model.eval()
    unscorable: list[int] = []
    try:
        with torch.no_grad():
            base = model_outputs(model, x, batch_size)
        for c, m, r in zip(cls_all, best, corr):
            if int(c) not in wanted or not np.isfinite(r) or not np.any(y == c) or not np.any(y != c):
                continue
            target = accuracy_on(y, [int(c)])
            off = accuracy_on(y, [int(k) for k in np.unique(y) if k != c])
            if target(base) == 0 or off(base) == 0:
                unscorable.append(int(c))
                continue
            for kind in kinds:
                sw = intervention_sweep(model, layer, decomposer.atoms_[m], x, target, off, kind=kind,
                                        fractions=fractions, ei_split=ei, channel_dim=cdim, batch_size=batch_size)
                out.append(ClassModeSweep(source, kind, int(c), int(m), float(r), sw))
    finally:
        model.train(was)
    if unscorable:
        warnings.warn(f"class sweeps at {layer}: skipped classes {unscorable}: the unmodified model's accuracy on "
                      "them (or on the other classes) is 0, so no ratio exists", RuntimeWarning, stacklevel=2)
    return out


def selectivity_summary(sweeps: Sequence[ClassModeSweep]) -> dict[str, dict[str, float]]:
    """Median and mean selectivity per ``"<source>/<kind>"`` over classes (finite values only)."""
    groups: dict[str, list[float]] = {}
    for s in sweeps:
        groups.setdefault(f"{s.source}/{s.kind}", []).append(s.sweep.selectivity)
    out = {}
    for k, v in groups.items():
        a = np.asarray(v, dtype=np.float64)
        f = a[np.isfinite(a)]
        out[k] = {"median": float(np.median(f)) if f.size else float("nan"),
                  "mean": float(f.mean()) if f.size else float("nan"), "n": float(a.size),
                  "n_finite": float(f.size)}
    return out
