"""``retina-codec fit REC --out DIR``: fit a BN-CNN (or LN model) to a recording and save it with a model card.

``REC`` is an NWB file, or ``sim:PRESET[:SEED]`` to fit the simulated retina directly (for example
``sim:default`` for the shipped model). Rerunning the same command after an interruption resumes from
the state kept in ``DIR/.fit_state/`` (removed after a successful save).
"""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from ..models.fit_recording import FIT_ARCHITECTURES, fit_recording
from . import options as opt

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``fit`` sub-command."""
    p = opt.add_command(
        subparsers, "fit", run, help="fit a retina model to a recording",
        description="Fit a BN-CNN (Poisson loss, Adam, early stopping on validation Pearson r) and write "
                    "OUT/model.safetensors, OUT/model.json and OUT/MODEL_CARD.md.",
    )
    p.add_argument("recording", help="NWB file, or sim:PRESET[:SEED] (simulated retina, e.g. sim:default)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--stimulus", default=None,
                   help="stimulus series to fit (NWB: series name; sim: naturalscene (default) or whitenoise)")
    opt.add_responses_argument(p)
    p.add_argument("--architecture", choices=sorted(FIT_ARCHITECTURES), default="bncnn")
    p.add_argument("--bn", choices=("channel", "unit"), default="channel",
                   help="BatchNorm per channel (default) or per unit (torch-deep-retina's BNCNN)")
    p.add_argument("--history", type=opt.positive_int, default=None, help="frames per window (default 40; 20 with --small)")
    p.add_argument("--small", action="store_true",
                   help="reduced BN-CNN for a quick CPU fit (history 20, kernels 9 and 7)")
    p.add_argument("--epochs", type=opt.positive_int, default=50)
    p.add_argument("--batch-size", type=opt.positive_int, default=256)
    p.add_argument("--lr", type=opt.positive_float, default=1e-3)
    p.add_argument("--l2", type=opt.non_negative_float, default=0.0, help="Adam weight decay")
    p.add_argument("--l1", type=opt.non_negative_float, default=0.0, help="L1 penalty on the predicted rates")
    p.add_argument("--patience", type=opt.positive_int, default=5, help="epochs without validation improvement before stopping")
    p.add_argument("--steps-per-epoch", type=opt.positive_int, default=None, help="cap on batches per epoch")
    p.add_argument("--device", type=opt.device_name, default="auto", help="auto (GPU when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=opt.non_negative_int, default=0)
    opt.add_overwrite_argument(p, "model in OUT")


def _command(args: argparse.Namespace) -> str:
    """The full command line that recreates this fit (every training option spelled out)."""
    parts = ["retina-codec", "fit", args.recording, "--out", args.out]
    for flag in ("stimulus", "responses", "history", "steps_per_epoch"):
        if getattr(args, flag) is not None:
            parts += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.small:
        parts.append("--small")
    for flag in ("architecture", "bn", "epochs", "batch_size", "lr", "l2", "l1", "patience", "seed", "device"):
        parts += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    """Fit, evaluate on the test split, save the model and its card; returns 0."""
    result = fit_recording(args.recording, args.out, stimulus=args.stimulus, responses=args.responses,
                           architecture=args.architecture, bn=args.bn, history=args.history, small=args.small,
                           epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, l2=args.l2, l1=args.l1,
                           patience=args.patience, steps_per_epoch=args.steps_per_epoch, device=args.device,
                           seed=args.seed, overwrite=args.overwrite, command=_command(args))
    t = result.test
    log.info("saved %s (best epoch %d, validation r %.3f%s)", Path(args.out), result.best_epoch, result.best_val_r,
             "" if t is None else f", test r {t.mean_r_response:.3f}"
             + ("" if t.mean_r_true_rate is None else f", r vs true rate {t.mean_r_true_rate:.3f}"))
    return 0
