"""``retina-codec contributions``: CODEC contributions of a fitted model over a recording, to HDF5.

Example::

    retina-codec contributions models/bncnn rec.nwb --stimulus naturalscene --split test \\
        --layers conv1 conv2 --target surprisal --out contrib.h5

Runs under ``torchrun --nproc_per_node=K -m retina_codec contributions ...`` too (bins split across ranks).
"""

from __future__ import annotations

import argparse
import logging
import math
import os

from ..errors import ContributionError
from . import options as opt

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the sub-command."""
    p = opt.add_command(
        subparsers, "contributions", run, help="contributions of hidden layers to a target, streamed to HDF5",
        description="Conductance (CODEC) contributions of the named layers of a model to a target, "
                    "for every time bin of a recording split; written to one HDF5 file (resumable).")
    p.add_argument("model", help="model directory or checkpoint (retina_codec.models.load_model): retina-codec "
                                 "folder, torch-deep-retina .pt or openretina .ckpt")
    p.add_argument("recording", help="recording (.nwb)")
    p.add_argument("--out", required=True, help="output HDF5 file")
    opt.add_overwrite_argument(p)
    p.add_argument("--stimulus", default=None, help="stimulus series name in the NWB file")
    opt.add_responses_argument(p)
    p.add_argument("--split", default="test", help="interval (split) whose bins to explain; 'all' for every bin")
    p.add_argument("--max-bins", type=opt.positive_int, default=None, metavar="N",
                   help="explain only the first N bins of the split (a quick look at a long recording)")
    p.add_argument("--layers", nargs="+", default=None,
                   help="layer names (default: the model's hidden layers, e.g. conv1 conv2)")
    p.add_argument("--target", default="surprisal",
                   help="surprisal | sum | cells | cell | top1_logit | softmax_prob | contrastive")
    p.add_argument("--cells", nargs="+", type=opt.non_negative_int, default=None,
                   help="cell indices for --target cell / cells / sum")
    p.add_argument("--reference-split", default=None,
                   help="split whose model outputs give the surprisal's mean and covariance (default: --split)")
    p.add_argument("--method", default="conductance",
                   choices=["conductance", "layer_ig", "act_grad", "act_normgrad"])
    p.add_argument("--rule", default="trapezoid", choices=["trapezoid", "left"])
    p.add_argument("--steps", type=opt.positive_int, default=20,
                   help="path steps m (default 20; bounded by the memory one bin's path needs)")
    p.add_argument("--baseline", type=opt.finite_float, default=0.0, help="baseline input value (z-scored; 0 = mean luminance)")
    p.add_argument("--reduce", nargs="+", default=["ei_split", "spatial_sum"],
                   help="ei_split and/or spatial_sum, or 'none' for full maps")
    p.add_argument("--batch-size", type=opt.positive_int_or_auto, default="auto", help="bins per chunk, or 'auto'")
    p.add_argument("--device", type=opt.device_name, default=None, help="cpu, cuda, cuda:1 (default: cuda when present)")
    p.add_argument("--dtype", default=None, choices=["float32", "float64"])
    p.add_argument("--batched-backward", default="auto", choices=["auto", "autograd", "func"],
                   help="per-cell targets: one backward batched by autograd (is_grads_batched) or torch.func "
                        "(same numbers)")
    p.add_argument("--fast-conv", default="auto", choices=["auto", "fft", "native"],
                   help="evaluate large-kernel convolutions with FFTs (same numbers; 'auto': where faster)")
    p.add_argument("--channels-last", action="store_true", help="channels-last layout (GPU speed option)")
    p.add_argument("--autocast", action="store_true",
                   help="bf16 mixed precision for the passes (GPU speed; bf16 rounding shows in completeness)")
    p.add_argument("--no-resume", action="store_true", help="ignore a partial file from an interrupted run")
    opt.add_trust_argument(p)
    opt.add_session_argument(p)
    return p


def _target(args: argparse.Namespace) -> object:
    from ..contributions.targets import CellsTarget, CellTarget, SumTarget, make_target
    from ..errors import TargetError

    name = args.target.lower()
    cells = args.cells
    if name in ("cell", "cells") and not cells:
        raise TargetError(f"--target {name}: give the cell indices with --cells")
    if cells and name not in ("cell", "cells", "sum"):  # not silently ignored: surprisal takes every cell
        raise TargetError(f"--cells: only for --target cell / cells / sum; --target {name} uses every output")
    if name == "cell":
        if len(cells) != 1:
            raise TargetError(f"--target cell: expected one index in --cells, found {len(cells)}")
        return CellTarget(cells[0])
    if name == "cells":
        return CellsTarget(cells)
    if name == "sum":
        return SumTarget(cells)
    return make_target(name)


def _check_steps_memory(steps: int, model: object, rec: object, device: str | None, dtype: str | None) -> None:
    """A :class:`~retina_codec.errors.ContributionError` naming ``--steps`` when one bin's path (``steps + 1`` interpolated inputs of
    the model's window, and as many input gradients) needs more memory than ``device`` has free.

    A lower bound: the engine needs more (activations of every layer along the path), so a path that does not
    fit by this count can never run; refused before any memory is allocated."""
    spec = getattr(model, "input_spec", None)
    history = int(getattr(spec, "history", 40) or 40)
    frame = tuple(getattr(rec, "frame_shape", ()) or (getattr(spec, "height", 1), getattr(spec, "width", 1)))
    itemsize = 8 if dtype == "float64" else 4
    need = 2 * (int(steps) + 1) * history * math.prod(int(v) for v in frame) * itemsize
    free = opt.available_memory(device or "auto")
    if free is not None and need > free:
        raise ContributionError(f"--steps: expected at most {max(1, int(steps * free / need))} path steps here, found "
                               f"{steps}: one bin's path of {steps + 1} windows of {history}x"
                               f"{'x'.join(str(v) for v in frame)} ({dtype or 'float32'}) with its gradients needs "
                               f"{opt.format_bytes(need)}, more than the {opt.format_bytes(free)} free "
                               f"on {device or 'the default device'}")


def run(args: argparse.Namespace) -> int:
    """Load the model and recording, compute and store the contributions; exit code.

    Bad settings (unknown target, rule, reduction, …) raise a :class:`RetinaCodecError`, which ``cli.main``
    reports as one line on stderr, exit code 2.
    """
    import torch

    from ..contributions import write_contributions
    from ..models import load_model
    from ..recordings.nwb import read_nwb

    opt.check_output(args.out, args.overwrite)
    if args.device is not None:
        from ..torch_utils.devices import resolve_device

        resolve_device(args.device)  # a DeviceError (one line) before the model and recording are read
    model = load_model(args.model, trust=args.trust, session=args.session)
    rec = read_nwb(args.recording, stimulus=args.stimulus, responses=args.responses)
    split = None if args.split == "all" else args.split
    full_split = split
    if args.max_bins is not None:
        if args.max_bins < 1:
            raise ContributionError(f"--max-bins: expected at least 1 bin, found {args.max_bins}")
        spec = getattr(model, "input_spec", None)
        split = rec.head_interval(split, args.max_bins, int(getattr(spec, "history", 40)),
                                  int(getattr(spec, "offset", 1)))
    layers = args.layers or list(getattr(model, "hidden_layers", ()) or [])
    if not layers:
        raise ContributionError("--layers: the model names no hidden layers; give layer names")
    reduce = None if [r.lower() for r in args.reduce] == ["none"] else args.reduce
    batch = opt.positive_int_or_auto(str(args.batch_size))
    _check_steps_memory(args.steps, model, rec, args.device, args.dtype)
    dtype = {"float32": torch.float32, "float64": torch.float64, None: None}[args.dtype]
    from ..contributions.sources import as_source

    reference = None
    if args.reference_split and args.reference_split != args.split:
        reference = as_source(rec, model, split=None if args.reference_split == "all" else args.reference_split)
    elif args.max_bins is not None:  # surprisal moments from the whole split, not only its first bins
        reference = as_source(rec, model, split=full_split)
    attrs = {"model_path": str(args.model), "recording_path": str(args.recording)}
    if args.target.lower() == "surprisal":  # which model rates gave the surprisal's mean and covariance
        attrs["surprisal_reference"] = (f"model rates over the {args.reference_split or args.split!r} split of "
                                        f"stimulus {rec.stimulus_name!r}")
    out = write_contributions(
        model, rec, args.out, layers, target=_target(args), method=args.method, steps=args.steps,
        rule=args.rule, baseline=args.baseline, reduce=reduce, batch_size=batch, device=args.device,
        dtype=dtype, split=split, reference=reference, resume=not args.no_resume,
        attrs=attrs,
        fast_conv=args.fast_conv, channels_last=args.channels_last or None, autocast=args.autocast,
        batched_backward=args.batched_backward,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    from ..stores.contributions import read_completeness

    summary, n = read_completeness(out)
    for layer, s in summary.items():
        log.info("%s: %d bins, completeness error %.3g%% of |F(x) - F(0)| (median per bin %.3g%%)",
                 layer, n, 100 * s["total_rel"], 100 * s["median_rel"])
    log.info("wrote %s", out)
    return 0
