"""``retina-codec contributions``: CODEC contributions of a fitted model over a recording, to HDF5.

Example::

    retina-codec contributions models/bncnn rec.nwb --stimulus naturalscene --split test \\
        --layers conv1 conv2 --target surprisal --out contrib.h5

Runs under ``torchrun --nproc_per_node=K -m retina_codec contributions ...`` too (bins split across ranks).
"""

from __future__ import annotations

import argparse
import logging
import os

from ..contributions.from_recording import contributions_from_recording
from ..contributions.targets import CellsTarget, CellTarget, SumTarget, make_target
from ..errors import TargetError
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


def run(args: argparse.Namespace) -> int:
    """Compute and store the contributions (one call of
    :func:`~retina_codec.contributions.from_recording.contributions_from_recording`); exit code.

    Bad settings (unknown target, rule, reduction, …) raise a :class:`RetinaCodecError`, which ``cli.main``
    reports as one line on stderr, exit code 2.
    """
    res = contributions_from_recording(
        args.model, args.recording, args.out, _target(args), layers=args.layers, stimulus=args.stimulus,
        responses=args.responses, split=args.split, max_bins=args.max_bins, reference_split=args.reference_split,
        method=args.method, rule=args.rule, steps=args.steps, baseline=args.baseline, reduce=args.reduce,
        batch_size=opt.positive_int_or_auto(str(args.batch_size)), device=args.device, dtype=args.dtype,
        resume=not args.no_resume, overwrite=args.overwrite, trust=args.trust, session=args.session,
        fast_conv=args.fast_conv, channels_last=args.channels_last, autocast=args.autocast,
        batched_backward=args.batched_backward)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    for layer, s in res.summary.items():
        log.info("%s: %d bins, completeness error %.3g%% of |F(x) - F(0)| (median per bin %.3g%%)",
                 layer, res.n_bins, 100 * s["total_rel"], 100 * s["median_rel"])
    log.info("wrote %s", res.path)
    return 0
