"""openretina checkpoints (PyTorch-Lightning ``.ckpt``) as toolkit models, one recording session each.

An openretina model (:class:`openretina.models.core_readout.UnifiedCoreReadout`, or the legacy
``ExampleCoreReadout``) is a shared 3-D convolutional core and one readout per recording session. Its
checkpoint is a torch pickle holding ``state_dict`` and ``hyper_parameters`` (the model's init arguments:
``in_shape`` ``(C, T, H, W)``, ``n_neurons_dict``, the ``core`` / ``readout`` Hydra configs with their
``_target_`` classes, ``hidden_channels``, ``data_info`` with ``input_shape`` ``(C, H, W)``, ``stim_mean`` /
``stim_std``, ``sessions_kwargs``, ``model_cut_frames``, ...), plus Lightning's loop and optimizer states.

**Security.** The file is read with ``torch.load(weights_only=True)`` and an allow-list of the plain-data
classes such files hold (omegaconf's ``DictConfig`` / ``ListConfig`` and their node and metadata classes, whose
unpickling only sets attributes; ``collections.defaultdict``; numpy arrays, scalars and dtypes; builtin
scalar types; pure paths). Anything else is refused with
:class:`~retina_codec.errors.UntrustedCheckpointError` naming the refused globals, unless ``trust=True``.
The model is rebuilt from its Hydra configs only when every ``_target_`` in them is a class or function in
``openretina.modules``, ``openretina.models`` or ``torch.nn`` (Hydra imports and calls whatever a
``_target_`` names); other targets are refused by name unless ``trust=True``.

**Time convention.** The toolkit window for bin t holds frames ``t − h − offset + 1 … t − offset``
(default ``offset=1``: frames ``t − h … t − 1``), and the rate of bin t is the openretina output time step
computed from exactly those h frames: ``h`` is the core's temporal receptive field, found by probing the
rebuilt network (the span of input frames one output step depends on). For a causal core (no temporal
padding: every output step depends on the h frames ending at it) that is the single output step of an
h-frame window. A core whose hidden layers pad in time (openretina's ``hidden_padding: true``, "same") lets
each step see ``lookahead`` frames after the frame openretina pairs it with in training; the window then
yields several output steps and the model uses the one untouched by the padding (``output`` index from the
end), so one window → one step, equal to the step of one long pass over the whole movie. openretina's own
training alignment pairs that step with the response at frame ``window end − lookahead``, i.e. toolkit
``offset = −lookahead`` (0 for a causal core: bin t from frames t − h + 1 … t). The loaded model keeps that
alignment by default (``input_spec.offset``; every stage reads its windows from it), so predictions and
contributions pair each bin with the frames openretina trained it on; ``offset=1`` gives torch-deep-retina's
convention instead (bin t from the frames strictly before it), which shifts the model by ``1 + lookahead``
frames against its training. ``metadata["openretina_offset"]`` records openretina's alignment.

**Colour.** openretina cores take ``(B, C, T, H, W)`` stimuli (e.g. C=2: UV and green). A greyscale
recording drives every channel with the same z-scored luminance times ``colour[c]`` (default 1 each; see
:func:`~retina_codec.models.wrapped.wrap`). Pass ``colour=`` to weigh the channels otherwise.

**Normalisation.** ``data_info["stim_mean"]`` / ``["stim_std"]`` (the statistics openretina z-scored its
training movie with, in the movie's raw units) become ``norm_stats``; the recording's frames must be in those
units (e.g. 0–255 for the Euler-lab movies).

Layers: ``core.layer0``, ``core.layer1``, … name the core's layer blocks (their outputs: after the
nonlinearity, and after pooling where a block pools), ``readout`` the session's readout; ``hidden_layers``
are the core layers.
"""

from __future__ import annotations

import collections
import inspect
import json
import os
import pathlib
import pickle
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, UntrustedCheckpointError
from ..stores.codec import to_json
from ..torch_utils.devices import resolve_device
from .wrapped import WrappedModel, wrap

__all__ = ["load_openretina", "describe_openretina", "read_openretina_checkpoint", "OPENRETINA_SUFFIXES",
           "SAFE_TARGET_PREFIXES"]

OPENRETINA_SUFFIXES = (".ckpt",)
#: the only ``_target_`` prefixes instantiated from an untrusted checkpoint's Hydra configs
SAFE_TARGET_PREFIXES = ("openretina.modules.", "openretina.models.", "torch.nn.")
_INSTALL = 'pip install "retina-codec[openretina]"'
_CELL_ID_KEYS = ("cell_ids", "neuron_ids", "unit_ids", "roi_ids", "cell_indices")
_FRAME_RATE_KEYS = ("frame_rate", "frame_rate_hz", "fps", "stimulus_frame_rate", "sampling_rate")


def _require_openretina(path: Path) -> None:
    try:
        import omegaconf  # noqa: F401
        import openretina.models.core_readout  # noqa: F401
    except ImportError as err:
        raise CheckpointError(f"{path}: an openretina checkpoint needs the openretina package, which is not "
                              f"installed ({err}); install it with {_INSTALL}") from None


# ---- reading the pickle safely ----------------------------------------------------------------------
def _safe_globals() -> list[Any]:
    """Plain-data classes of openretina checkpoints. Each is only instantiated (``__new__``, or a call with
    the pickled arguments) and filled by ``__setstate__`` / ``__dict__`` updates that set attributes: omegaconf's
    ``Node.__setstate__`` and ``BaseContainer.__setstate__`` update ``__dict__`` (the latter rebuilds
    ``typing.Dict[...]`` annotations); ``Metadata`` is a dataclass; numpy's ``_reconstruct`` / ``scalar``
    rebuild arrays and scalars from bytes."""
    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode, BooleanNode, BytesNode, FloatNode, IntegerNode, StringNode

    out: list[Any] = [DictConfig, ListConfig, Metadata, ContainerMetadata, AnyNode, StringNode, IntegerNode,
                      FloatNode, BooleanNode, BytesNode, (typing.Any, "typing.Any"), collections.defaultdict,
                      dict, list, tuple, int, float, str, bool, bytes, type(None),
                      pathlib.PurePosixPath, pathlib.PosixPath, pathlib.PureWindowsPath]
    core = getattr(np, "_core", None) or np.core
    for name in ("_reconstruct", "scalar"):
        fn = getattr(core.multiarray, name)
        out += [(fn, f"numpy.core.multiarray.{name}"), (fn, f"numpy._core.multiarray.{name}")]
    out += [np.ndarray, np.dtype]
    for code in "?bhilqBHILQefdgFDGUSOM":
        try:
            out.append(type(np.dtype(code if code != "M" else "M8[ns]")))
        except TypeError:
            continue
    return out


def _global_name(g: Any) -> str:
    return g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"


def _refused_globals(path: Path, allowed: list[Any]) -> list[str]:
    try:
        found = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # a legacy (non-zip) file cannot be scanned
        return []
    ok = {_global_name(g) for g in allowed} | {"builtins.dict", "builtins.list", "builtins.int", "builtins.str",
                                               "builtins.float", "builtins.bool", "builtins.tuple"}
    return sorted(g for g in found if g not in ok)


def read_openretina_checkpoint(path: str | os.PathLike, trust: bool = False) -> dict[str, Any]:
    """The raw checkpoint dict of an openretina ``.ckpt`` file, unpickled with ``weights_only=True`` and the
    plain-data allow-list (see the module docstring); fully (running any code the pickle names) only when
    ``trust``. Raises :class:`~retina_codec.errors.UntrustedCheckpointError` naming the refused globals."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such openretina checkpoint file")
    _require_openretina(path)
    allowed = _safe_globals()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.serialization.safe_globals(allowed):
                data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "global" not in text.lower() and "build" not in text.lower() and "reduce" not in text.lower():
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({_first_line(text)})") from None
        if not trust:
            refused = _refused_globals(path, allowed)
            raise UntrustedCheckpointError(
                f"{path}: loading needs types outside the safe set of openretina checkpoints (tensors, "
                f"containers, omegaconf configs, numpy arrays): {', '.join(refused) or _first_line(text)}. "
                "Unpickling them can run arbitrary code; pass trust=True (CLI: --trust) only for a file from a "
                "source you trust") from None
        data = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({_first_line(str(err))})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a Lightning checkpoint dict, found {type(data).__name__}")
    for key in ("state_dict", "hyper_parameters"):
        if not isinstance(data.get(key), dict):
            raise CheckpointError(f"{path}: field {key!r}: expected a dict (a PyTorch-Lightning checkpoint of an "
                                  f"openretina model), found {type(data.get(key)).__name__}")
    return data


def _first_line(text: str) -> str:
    tail = text.split("WeightsUnpickler error:")[-1]
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    return lines[0][:200] if lines else ""


# ---- rebuilding the network ---------------------------------------------------------------------------
def _plain(cfg: Any) -> Any:
    """A DictConfig / ListConfig as plain dicts and lists, interpolations resolved (others as they are)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _targets(tree: Any, where: str) -> list[tuple[str, str]]:
    """Every ``(place, _target_)`` in a config tree (dicts and lists)."""
    out: list[tuple[str, str]] = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == "_target_":
                out.append((where, str(v)))
            else:
                out += _targets(v, f"{where}.{k}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out += _targets(v, f"{where}[{i}]")
    elif isinstance(tree, str) and "${" in tree:
        out.append((where, f"unresolved interpolation {tree!r}"))
    return out


def _check_targets(configs: dict[str, Any], path: Path, trust: bool) -> None:
    bad = [(w, t) for name, tree in configs.items() for w, t in _targets(tree, name)
           if not t.startswith(SAFE_TARGET_PREFIXES)]
    if bad and not trust:
        listed = ", ".join(f"{t} (at hyper_parameters.{w})" for w, t in bad)
        raise UntrustedCheckpointError(
            f"{path}: the model's Hydra configs name targets outside {', '.join(SAFE_TARGET_PREFIXES)}: {listed}. "
            "Instantiating them runs that code; pass trust=True (CLI: --trust) only for a file from a source you "
            "trust")


def _call(cls: type, kwargs: dict[str, Any], path: Path) -> nn.Module:
    params = inspect.signature(cls.__init__).parameters
    use = {k: v for k, v in kwargs.items() if k in params}
    missing = [n for n, p in params.items() if n != "self" and p.default is inspect.Parameter.empty
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in use]
    if missing:
        raise CheckpointError(f"{path}: hyper_parameters lack {', '.join(missing)} (needed by {cls.__name__})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openretina's init-time notes (readout bias init, frame cuts)
            return cls(**use)
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{path}: cannot rebuild {cls.__name__} from the checkpoint's hyper_parameters "
                              f"({type(err).__name__}: {err})") from err


def _rebuild(ckpt: dict[str, Any], path: Path, trust: bool) -> nn.Module:
    """The openretina LightningModule, its weights loaded strictly, in eval mode (float32, CPU)."""
    from omegaconf import OmegaConf
    from openretina.models.core_readout import ExampleCoreReadout, UnifiedCoreReadout

    hp = dict(ckpt["hyper_parameters"])
    legacy = "temporal_kernel_sizes" in hp and "n_neurons_dict" in hp  # ExampleCoreReadout's own arguments
    if "core" in hp and "readout" in hp and not legacy:
        config_keys = [k for k in ("core", "readout", "loss", "evaluation_loss", "optimizer", "lr_scheduler")
                       if hp.get(k) is not None and not isinstance(hp[k], nn.Module)]
        plain = {k: _plain(hp[k]) for k in config_keys}
        # every hyper-parameter: UnifiedCoreReadout hands n_neurons_dict and data_info's mean_activity_dict to
        # hydra.utils.instantiate as well, which would instantiate a `_target_` dict inside them too
        _check_targets({k: plain.get(k, _plain(v)) for k, v in hp.items()}, path, trust)
        for k in config_keys:  # instantiate exactly the configs checked above (resolved, no interpolations)
            hp[k] = OmegaConf.create(plain[k]) if isinstance(plain[k], dict) else plain[k]
        hp["data_info"] = _plain(hp.get("data_info"))
        net = _call(UnifiedCoreReadout, hp, path)
    elif legacy:  # built from its arguments by openretina's code, no Hydra targets (its file pickles the
        # core and readout modules too, so reading it needed trust=True already)
        net = _call(ExampleCoreReadout, {k: _plain(v) for k, v in hp.items() if k not in ("core", "readout")}, path)
    else:
        raise CheckpointError(f"{path}: hyper_parameters hold neither 'core' and 'readout' configs "
                              "(UnifiedCoreReadout) nor ExampleCoreReadout's arguments; found "
                              f"{', '.join(sorted(map(str, hp))) or 'none'}")
    hook = getattr(net, "on_load_checkpoint", None)
    if callable(hook):
        hook(ckpt)  # openretina's own renames of legacy keys
    state = ckpt["state_dict"]
    own = net.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path}: state_dict does not match the rebuilt {type(net).__name__} (missing: "
                              f"{missing or 'none'}; unexpected: {unexpected or 'none'})")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: state_dict: {err}") from err
    return net.eval()


# ---- what the checkpoint says about its data ------------------------------------------------------------
def _data_info(ckpt: dict[str, Any]) -> dict[str, Any]:
    info = _plain(ckpt["hyper_parameters"].get("data_info")) or {}
    return dict(info) if isinstance(info, dict) else {}


def _sessions(ckpt: dict[str, Any], path: Path) -> dict[str, int]:
    hp = ckpt["hyper_parameters"]
    n = _plain(hp.get("n_neurons_dict")) or _data_info(ckpt).get("n_neurons_dict")
    if not isinstance(n, dict) or not n:
        raise CheckpointError(f"{path}: hyper_parameters field 'n_neurons_dict': expected {{session: number of "
                              f"neurons}}, found {n!r}")
    return {str(k): int(v) for k, v in n.items()}


def _input_layout(ckpt: dict[str, Any], path: Path) -> tuple[int, tuple[int, int]]:
    """``(channels, (H, W))`` of the network's input, from ``data_info["input_shape"]`` ``(C, H, W)`` (the
    training movie's) or else ``hyper_parameters["in_shape"]`` ``(C, T, H, W)``."""
    shape = _data_info(ckpt).get("input_shape")
    if shape is not None and len(tuple(shape)) == 3:
        c, h, w = (int(s) for s in shape)
        return c, (h, w)
    in_shape = _plain(ckpt["hyper_parameters"].get("in_shape"))
    if in_shape is not None and len(tuple(in_shape)) == 4:
        c, _, h, w = (int(s) for s in in_shape)
        return c, (h, w)
    raise CheckpointError(f"{path}: no input shape: expected data_info['input_shape'] (C, H, W) or "
                          f"hyper_parameters['in_shape'] (C, T, H, W), found {shape!r} and {in_shape!r}")


def _norm_stats(info: dict[str, Any], path: Path) -> tuple[float, float] | None:
    mean, std = info.get("stim_mean"), info.get("stim_std")
    if mean is None or std is None:
        return None
    try:
        mean, std = float(np.asarray(mean).reshape(())), float(np.asarray(std).reshape(()))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: data_info 'stim_mean' / 'stim_std': expected scalars ({err})") from err
    if not std > 0:
        raise CheckpointError(f"{path}: data_info 'stim_std': expected a positive number, found {std}")
    return mean, std


def _frame_rate(info: dict[str, Any]) -> float | None:
    for key in _FRAME_RATE_KEYS:
        if info.get(key) is not None:
            try:
                return float(np.asarray(info[key]).reshape(()))
            except (TypeError, ValueError):
                continue
    return None


def _cell_ids(info: dict[str, Any], session: str, n: int) -> list[str]:
    """Per-session neuron ids from ``data_info`` (``sessions_kwargs[session][key]`` or ``data_info[key][session]``
    for ``key`` in cell/neuron/unit/roi ids), else ``"<session>/<i>"``."""
    places = [(info.get("sessions_kwargs") or {}).get(session) or {}]
    places += [{k: v.get(session)} for k, v in info.items() if k in _CELL_ID_KEYS and isinstance(v, dict)]
    for place in places:
        for key in _CELL_ID_KEYS:
            value = place.get(key) if isinstance(place, dict) else None
            if value is None:
                continue
            ids = [str(v.item() if hasattr(v, "item") else v) for v in np.asarray(value).reshape(-1)]
            if len(ids) == n and len(set(ids)) == n:
                return ids
    return [f"{session}/{i}" for i in range(n)]


# ---- the temporal receptive field -------------------------------------------------------------------------
@dataclass(frozen=True)
class TimeProbe:
    """What probing the network in time found (frames at the training frame rate).

    history : frames per window (the receptive field, plus leading frames a core cuts off).
    steps : output time steps of one ``history``-frame window.
    index : which of them the window's rate is, counted from the end (-1: the last).
    cut : frames fewer in the output than in the input (openretina's ``model_cut_frames``).
    lookahead : frames after its training-aligned frame that one output step sees (0 for a causal core).
    """

    history: int
    steps: int
    index: int
    cut: int
    lookahead: int


def _run(net: nn.Module, x: torch.Tensor, session: str) -> torch.Tensor:
    out = net(x, data_key=session)
    if not isinstance(out, torch.Tensor) or out.dim() != 3:
        raise CheckpointError(f"{type(net).__name__}: expected outputs (B, T', N) over time, found "
                              f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return out


def _steps(net: nn.Module, t: int, c: int, hw: tuple[int, int], session: str, ref: torch.Tensor) -> int:
    """Output time steps for a t-frame input (0 when the network rejects it)."""
    try:
        with torch.no_grad():
            return int(_run(net, ref.new_zeros((1, c, t, *hw)), session).shape[1])
    except CheckpointError:
        raise
    except Exception:  # too few frames for the convolutions
        return 0


def probe_time(net: nn.Module, session: str, channels: int, frame_shape: tuple[int, int],
               start: int = 32, path: str | os.PathLike = "") -> TimeProbe:
    """Probe ``net`` (in eval mode) for its temporal receptive field and the output step one window gives.

    Runs it on zero inputs for the fewest frames that give one output step, then on a random movie: the
    input frames with a non-zero gradient for a middle output step are its receptive field; a window of those
    frames (plus any frames the core cuts) must give that output step exactly, else
    :class:`~retina_codec.errors.CheckpointError`.
    """
    ref = next((t for t in list(net.parameters()) + list(net.buffers()) if t.is_floating_point()), None)
    ref = torch.zeros((), dtype=torch.float32) if ref is None else ref
    hw = (int(frame_shape[0]), int(frame_shape[1]))
    t0 = max(int(start), 2)
    n0 = _steps(net, t0, channels, hw, session, ref)
    while n0 == 0 and t0 < 4096:
        t0 *= 2
        n0 = _steps(net, t0, channels, hw, session, ref)
    if n0 == 0:
        raise CheckpointError(f"{path}: the openretina model gives no output for up to {t0} frames of "
                              f"{channels}×{hw[0]}×{hw[1]}")
    cut = t0 - n0
    t_min = cut + 1
    if _steps(net, t_min, channels, hw, session, ref) != 1:  # not a constant cut: search
        t_min = next((t for t in range(1, t0 + 1) if _steps(net, t, channels, hw, session, ref) >= 1), t0)
    gen = torch.Generator().manual_seed(0)
    length = 3 * t_min + 32
    while True:
        x = torch.randn((1, channels, length, *hw), generator=gen).to(ref).requires_grad_(True)
        out = _run(net, x, session)
        j = out.shape[1] // 2
        (grad,) = torch.autograd.grad(out[0, j].sum(), x)
        frames = torch.nonzero(grad.abs().sum(dim=(0, 1, 3, 4)) > 0).reshape(-1)
        if frames.numel() == 0:
            raise CheckpointError(f"{path}: the model's output does not depend on its input (zero gradient)")
        lo, hi = int(frames[0]), int(frames[-1])
        if (lo > 0 and hi < length - 1) or length >= 4096:
            break
        length *= 2
    extra = max(0, lo - j)  # frames a core cuts before its first output step (they do not reach it)
    start_frame = lo - extra
    history = hi - start_frame + 1
    with torch.no_grad():
        win = _run(net, x[:, :, start_frame:hi + 1].detach(), session)
        k = j - start_frame
        if not 0 <= k < win.shape[1]:
            raise CheckpointError(f"{path}: a {history}-frame window gives {win.shape[1]} output steps, none of "
                                  "them the receptive field's")
        a, b = win[0, k], out[0, j].detach()
        tol = 1e-4 * float(b.abs().max()) + 1e-6
        if float((a - b).abs().max()) > tol:
            raise CheckpointError(f"{path}: no window reproduces the model's output over a whole movie (step "
                                  f"{k} of a {history}-frame window differs by {float((a - b).abs().max()):.3g})")
    return TimeProbe(history=history, steps=int(win.shape[1]), index=k - int(win.shape[1]), cut=cut,
                     lookahead=hi - (j + cut))


# ---- public API ------------------------------------------------------------------------------------------
def _layer_aliases(net: nn.Module, session: str) -> tuple[dict[str, str], list[str]]:
    aliases: dict[str, str] = {}
    layers: list[str] = []
    features = getattr(getattr(net, "core", None), "features", None)
    if isinstance(features, nn.Sequential):
        for i, (name, _) in enumerate(features.named_children()):
            aliases[f"core.layer{i}"] = f"core.features.{name}"
            layers.append(f"core.layer{i}")
    readout = getattr(net, "readout", None)
    if isinstance(readout, nn.ModuleDict) and session in readout:
        aliases["readout"] = f"readout.{session}"
    return aliases, layers


def _pick_session(sessions: dict[str, int], session: str | None, path: Path) -> str:
    names = ", ".join(sessions)
    if session is None:
        if len(sessions) == 1:
            return next(iter(sessions))
        raise CheckpointError(f"{path}: the checkpoint holds {len(sessions)} sessions ({names}); choose one with "
                              "session=NAME (CLI: --session NAME)")
    if str(session) not in sessions:
        raise CheckpointError(f"{path}: session {session!r} not in the checkpoint; its sessions are {names}")
    return str(session)


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (:func:`~retina_codec.stores.codec.to_json`); a one-element array or
    tensor as its number."""
    if isinstance(value, (np.generic, torch.Tensor, np.ndarray)) and np.size(value) == 1:
        value = np.asarray(value).reshape(()).item()
    return json.loads(to_json(value, sort_keys=False))


def load_openretina(path: str | os.PathLike, session: str | None = None, device: str | torch.device = "cpu",
                    trust: bool = False, colour: typing.Sequence[float] | None = None,
                    offset: int | None = None) -> WrappedModel:
    """One session of an openretina checkpoint as a toolkit model (see the module docstring).

    ``session``: the recording session (readout) to expose; required when the checkpoint has several.
    The model takes z-scored greyscale windows ``(B, h, H, W)`` (h = the core's temporal receptive field in
    frames, ``(H, W)`` = ``data_info["input_shape"][1:]`` pixels) and returns the session's predicted
    responses ``(B, N)`` in the unit openretina was trained on; ``colour`` ``(C,)`` weighs the greyscale
    luminance per input channel (default 1 each); ``offset`` is the toolkit's window convention (default
    openretina's own alignment, ``−lookahead``: 0 for a causal core; 1 for torch-deep-retina's). ``model.net`` is the openretina LightningModule, in eval mode on
    ``device``; ``model.metadata`` records the session, the probe's findings and the checkpoint's data info.
    """
    path = Path(path)
    device = resolve_device(device)
    ckpt = read_openretina_checkpoint(path, trust=trust)
    sessions = _sessions(ckpt, path)
    chosen = _pick_session(sessions, session, path)
    net = _rebuild(ckpt, path, trust)
    info = _data_info(ckpt)
    channels, frame_shape = _input_layout(ckpt, path)
    in_shape = _plain(ckpt["hyper_parameters"].get("in_shape")) or (None, 32)
    probe = probe_time(net, chosen, channels, frame_shape, start=int(in_shape[1] or 32), path=path)
    aliases, layers = _layer_aliases(net, chosen)
    net = net.to(device)
    model = wrap(net, history=probe.history, frame_shape=frame_shape, channels=channels, colour=colour,
                 output="last" if probe.index == -1 else probe.index, forward_kwargs={"data_key": chosen},
                 cell_ids=_cell_ids(info, chosen, sessions[chosen]), layers=layers, aliases=aliases,
                 frame_rate=_frame_rate(info), norm_stats=_norm_stats(info, path),
                 offset=-probe.lookahead if offset is None else int(offset))
    model.metadata = {
        "source": "openretina", "checkpoint": str(path), "session": chosen, "sessions": list(sessions),
        "model_class": type(net).__name__, "core": type(getattr(net, "core", None)).__name__,
        "readout": type(getattr(net, "readout", None)).__name__,
        "pytorch_lightning_version": _jsonable(ckpt.get("pytorch-lightning_version")),
        "output_steps_per_window": probe.steps, "output_index": probe.index, "cut_frames": probe.cut,
        "lookahead_frames": probe.lookahead, "openretina_offset": -probe.lookahead,
        "data_info_model_cut_frames": _jsonable(info.get("model_cut_frames")),
        "data_info_keys": sorted(map(str, info)),
    }
    cut_info = info.get("model_cut_frames")
    if cut_info is not None and int(np.asarray(cut_info).reshape(())) != probe.cut:
        warnings.warn(f"{path}: data_info['model_cut_frames'] = {int(np.asarray(cut_info).reshape(()))}, but the "
                      f"rebuilt model cuts {probe.cut} frames (openretina measured it on its test set)",
                      RuntimeWarning, stacklevel=2)
    return model.eval()


def describe_openretina(path: str | os.PathLike, trust: bool = False) -> dict[str, Any]:
    """What an openretina checkpoint holds (JSON-ready): ``sessions`` ``{name: neurons}``, ``input_shape``
    ``(C, H, W)``, ``channels``, ``in_shape`` ``(C, T, H, W)``, ``layers`` (stable names) and
    ``hidden_layers``, ``history`` (temporal receptive field in frames) and the probe's ``output_steps``,
    ``cut_frames`` and ``lookahead_frames``, ``norm_stats``, ``frame_rate`` (Hz or ``None``), the
    core / readout classes and ``data_info_keys``. Rebuilds the network once (security as :func:`load_openretina`)."""
    path = Path(path)
    ckpt = read_openretina_checkpoint(path, trust=trust)
    sessions = _sessions(ckpt, path)
    net = _rebuild(ckpt, path, trust)
    info = _data_info(ckpt)
    channels, frame_shape = _input_layout(ckpt, path)
    first = next(iter(sessions))
    in_shape = _plain(ckpt["hyper_parameters"].get("in_shape"))
    probe = probe_time(net, first, channels, frame_shape, start=int((in_shape or (None, 32))[1] or 32), path=path)
    aliases, layers = _layer_aliases(net, first)
    ns = _norm_stats(info, path)
    return {
        "format": "openretina", "path": str(path), "model_class": type(net).__name__,
        "core": type(getattr(net, "core", None)).__name__, "readout": type(getattr(net, "readout", None)).__name__,
        "sessions": sessions, "n_sessions": len(sessions), "input_shape": [channels, *frame_shape],
        "channels": channels, "in_shape": None if in_shape is None else [int(s) for s in in_shape],
        "history": probe.history, "output_steps": probe.steps, "cut_frames": probe.cut,
        "lookahead_frames": probe.lookahead, "layers": list(aliases), "hidden_layers": layers,
        "norm_stats": None if ns is None else {"mean": ns[0], "std": ns[1]}, "frame_rate": _frame_rate(info),
        "model_cut_frames": _jsonable(info.get("model_cut_frames")), "data_info_keys": sorted(map(str, info)),
        "cell_ids": {s: _cell_ids(info, s, n) for s, n in sessions.items()},
        "pytorch_lightning_version": _jsonable(ckpt.get("pytorch-lightning_version")),
        "n_parameters": int(sum(p.numel() for p in net.parameters())),
    }


def format_openretina(desc: dict[str, Any]) -> str:
    """A few lines for :func:`describe_openretina`'s dict (what ``retina-codec inspect model.ckpt`` prints)."""
    ns = desc["norm_stats"]
    rate = f"{desc['frame_rate']:g} Hz" if desc.get("frame_rate") else "not recorded"
    lines = [
        f"{desc['path']}: openretina {desc['model_class']} ({desc['core']} core, {desc['readout']} readout, "
        f"{desc['n_parameters']} parameters, Lightning {desc['pytorch_lightning_version']})",
        f"  sessions ({desc['n_sessions']}): " + ", ".join(f"{s} ({n} cells)" for s, n in desc["sessions"].items()),
        f"  input: {desc['channels']} channels x {desc['input_shape'][1]}x{desc['input_shape'][2]} pixels, "
        f"frame rate {rate}",
        f"  history (temporal receptive field): {desc['history']} frames; {desc['cut_frames']} frames cut, "
        f"{desc['lookahead_frames']} frames look-ahead per output step",
        f"  layers: {', '.join(desc['layers']) or 'none'} (hidden: {', '.join(desc['hidden_layers']) or 'none'})",
        "  norm stats: " + ("none (the recording's own)" if ns is None else f"mean {ns['mean']:g}, std {ns['std']:g}"),
        f"  data_info keys: {', '.join(desc['data_info_keys']) or 'none'}",
    ]
    return "\n".join(lines)
