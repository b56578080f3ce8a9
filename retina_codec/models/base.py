"""What every retina model carries: its input spec, normalisation, cell ids and addressable layer names.

A model's input at bin t is the z-scored history window ``(B, history, H, W)`` (oldest frame first; see
:mod:`retina_codec.recordings.windows` for the offset convention) and its output is the predicted
response ``(B, n_cells)`` in the unit of the responses it was fitted to (spike count per bin, or Hz).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import LayerNotFoundError, ModelConfigError
from ..recordings.windows import frames_of_windows
from ..torch_utils.hooks import resolve_module

__all__ = ["InputSpec", "RetinaModel", "get_module", "model_norm_stats", "input_norm", "model_windows"]


def model_norm_stats(model: Any) -> tuple[float, float] | None:
    """The stimulus ``(mean, std)`` a model was trained with (its ``norm_stats``), when it carries them."""
    ns = getattr(model, "norm_stats", None)
    if isinstance(ns, dict) and "mean" in ns and "std" in ns:
        return float(ns["mean"]), float(ns["std"])
    if isinstance(ns, (tuple, list)) and len(ns) == 2:
        return float(ns[0]), float(ns[1])
    mean, std = getattr(model, "norm_mean", None), getattr(model, "norm_std", None)
    if mean is not None and std is not None:
        return float(mean), float(std)
    return None


def warn_frame_rate(model: Any, recording: Any, tol: float = 0.01) -> None:
    """Warn when ``recording``'s frame rate differs (beyond ``tol`` relative) from the one ``model`` was
    trained at: its history window of h frames then spans another stretch of time (e.g. 400 ms at 100 Hz,
    1.3 s at 30 Hz), so predictions, contributions and RFs are computed outside what the model learned."""
    spec = getattr(model, "input_spec", None)
    want = getattr(spec, "frame_rate", None)
    have = getattr(recording, "frame_rate", None)
    if want and have and abs(float(have) - float(want)) > tol * float(want):
        warnings.warn(f"recording {getattr(recording, 'stimulus_name', '')!r}: {float(have):g} Hz frames, but the "
                      f"model was trained at {float(want):g} Hz (its {spec.history}-frame history spans "
                      f"{1e3 * spec.history / float(have):.0f} ms here instead of {1e3 * spec.history / float(want):.0f} "
                      "ms); resample the stimulus to the model's rate", RuntimeWarning, stacklevel=3)


def input_norm(model: Any, recording: Any) -> tuple[float, float]:
    """The ``(mean, std)`` that z-scores ``recording``'s stimulus for ``model``: the model's own
    :func:`model_norm_stats` when it carries them, else the recording's train statistics."""
    return model_norm_stats(model) or recording.normalization()


def model_windows(windows: np.ndarray, mean: float, std: float, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Z-scored model input ``(B, h, H, W)`` for a batch of overlapping history windows (as yielded by
    :meth:`~retina_codec.recordings.Recording.iter_windows`): the ``B + h − 1`` frames are moved and
    z-scored once and the windows are a view of them (``x[b] = frames[b : b + h]``), not ``h`` copies."""
    h = windows.shape[1]
    if windows.shape[0] == 0:
        return torch.zeros(windows.shape, dtype=dtype, device=device)
    frames = torch.from_numpy(np.asarray(frames_of_windows(windows), dtype=np.float32))
    frames = ((frames.to(device) - mean) / std).to(dtype)
    return frames.unfold(0, h, 1).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class InputSpec:
    """The stimulus a model expects.

    history : frames per window (channels of the input), oldest first.
    height, width : frame size in pixels.
    frame_rate : frames per second (Hz) of the training data; ``None`` when unknown.
    offset : window convention: bin t's window is frames ``t-history-offset+1 … t-offset``
        (``offset=1``, torch-deep-retina's: frames ``t-history … t-1``).
    channels : colour channels of the wrapped network's own input (e.g. 2 for an openretina UV/green
        model), ``None`` for a greyscale model. The model itself always takes greyscale windows
        ``(B, history, H, W)``; a colour model maps them onto its channels (:mod:`.wrapped`).
    """

    history: int
    height: int
    width: int
    frame_rate: float | None = None
    offset: int = 1
    channels: int | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(history, H, W)``: one input sample."""
        return (self.history, self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        return cls(int(d["history"]), int(d["height"]), int(d["width"]),
                   None if d.get("frame_rate") is None else float(d["frame_rate"]), int(d.get("offset", 1)),
                   None if d.get("channels") is None else int(d["channels"]))


class RetinaModel(nn.Module):
    """Base of the retina models: data-description attributes and the layer-name contract.

    Attributes
    ----------
    input_spec : :class:`InputSpec`.
    norm_stats : ``(mean, std)`` used to z-score the stimulus before it enters the model, or ``None``.
    cell_ids : one id per output, or ``None`` when unknown.
    metadata : free-form JSON-ready dict (training provenance, held-out metrics) kept in checkpoints.
    layer_names : addressable names in forward order (a block's own name follows its parts).
    hidden_layers : the interneuron layers (post-nonlinearity block outputs).
    affine_stem : names of the leading modules that are affine in eval mode; the contribution engine
        computes ``stem(αx) = α·(stem(x) − stem(0)) + stem(0)`` once for a path of inputs αx (when empty,
        the engine looks for one itself: :func:`~retina_codec.contributions.stem_search.discover_stem`).
    layer_aliases : extra names for sub-modules, ``{name: named_modules() name}`` (a wrapped module's
        own names, ``"conv1"`` for ``"net.conv1"``); every function that takes a layer name accepts them.
    """

    architecture: ClassVar[str] = "RetinaModel"

    def __init__(self, n_cells: int, history: int, frame_shape: Sequence[int]) -> None:
        super().__init__()
        if n_cells < 1:
            raise ModelConfigError(f"n_cells: expected a positive number of cells, found {n_cells}")
        h, w = (int(s) for s in frame_shape)
        self.n_cells = int(n_cells)
        self.input_spec = InputSpec(int(history), h, w)
        self.norm_stats: tuple[float, float] | None = None
        self.cell_ids: list[str] | None = None
        self.metadata: dict[str, Any] = {}

    # --- to be provided by subclasses ---
    layer_names: tuple[str, ...] = ()
    hidden_layers: tuple[str, ...] = ()
    affine_stem: tuple[str, ...] = ()
    layer_aliases: dict[str, str] = {}  # noqa: RUF012  (read-only default; subclasses set their own)

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this architecture (JSON-ready)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: architecture, config, input spec, normalisation, cell ids."""
        return {
            "architecture": self.architecture,
            "config": self.config(),
            "input_spec": self.input_spec.to_dict(),
            "norm_stats": None if self.norm_stats is None else
            {"mean": float(self.norm_stats[0]), "std": float(self.norm_stats[1])},
            "cell_ids": None if self.cell_ids is None else [str(c) for c in self.cell_ids],
            "n_cells": self.n_cells,
            "layer_names": list(self.layer_names),
            "affine_stem": list(self.affine_stem),
        }


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (e.g. ``"conv1"``, ``"conv1.bn"``).

    Raises :class:`~retina_codec.errors.LayerNotFoundError` naming the model and the available names
    (``model.layer_names`` when the model has them, else every named submodule).
    """
    try:
        return resolve_module(model, name)
    except LayerNotFoundError:
        available = list(getattr(model, "layer_names", ()) or [n for n, _ in model.named_modules() if n])
        raise LayerNotFoundError(
            f"layer {name!r} not found in {type(model).__name__}; available: {', '.join(available)}"
        ) from None
