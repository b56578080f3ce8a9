"""``retina-codec demo``: the whole pipeline on the embedded default, a simulated retina, ending in a report.

The stages, the folder layout and the resume rule are library code (:mod:`retina_codec.pipeline`); this
module parses the command line and runs :func:`~retina_codec.pipeline.stages.run_demo`.
"""

from __future__ import annotations

import argparse
import time

from ..pipeline.layout import SHIPPED_MODEL, check_out_folder, default_model_path
from ..pipeline.stages import STAGES, Demo, DemoSettings, classifier_argv, run_demo
from . import options as opt

__all__ = ["add_parser", "run", "DemoSettings", "Demo", "STAGES", "default_model_path", "check_out_folder",
           "classifier_argv"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``demo`` sub-command."""
    p = opt.add_command(
        subparsers, "demo", run, help="run the whole pipeline on the embedded simulated retina and write an HTML report",
        description="Simulate the retina (natural scenes, then white noise) or reuse the recording in --out, load "
                    "the shipped fitted BN-CNN, compute CODEC contributions to the population surprisal for both "
                    "conv layers, contribution modes, STA / model STA / mode-conditioned RFs and dynamic-RF "
                    "sources, the classifier comparison, and write OUT/report.html. Each stage skips when its "
                    "output exists (resumable).",
    )
    p.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--preset", default="default", choices=("default", "small"),
                   help="simulation size (default: 15 min natural scenes + 7.5 min white noise)")
    p.add_argument("--seed", type=opt.non_negative_int, default=0, help="simulation seed (default 0)")
    p.add_argument("--resimulate", action="store_true", help="simulate again even if OUT has the recording")
    p.add_argument("--model", default=None,
                   help=f"fitted model folder (default: the shipped {SHIPPED_MODEL}; when that is missing, a small "
                        "BN-CNN is fitted into OUT/model)")
    p.add_argument("--session", default=None, metavar="NAME",
                   help="with --model MODEL.ckpt: the recording session of a multi-session openretina checkpoint")
    p.add_argument("--fit", action="store_true", help="fit a small BN-CNN into OUT/model instead of using --model")
    p.add_argument("--fit-epochs", type=opt.positive_int, default=2, help="epochs of that fit (default 2)")
    p.add_argument("--fit-steps", type=opt.positive_int, default=100, help="batches of 256 per epoch of that fit (default 100)")
    p.add_argument("--bins", type=opt.positive_int, default=3000,
                   help="test bins (from the start of the natural-scene test split) whose contributions and "
                        "modes are computed (default 3000 = 30 s)")
    p.add_argument("--irf-bins", type=opt.positive_int, default=1500,
                   help="the first N of those bins used for instantaneous / mode-conditioned RFs (default 1500)")
    p.add_argument("--rf-cells", nargs="+", default=None,
                   help="cell ids for the conditioned RFs (default: the first cell of each type)")
    p.add_argument("--rf-modes", type=opt.positive_int, default=8,
                   help="condition RFs on the N most often active modes of each layer (default 8)")
    p.add_argument("--steps", type=opt.positive_int, default=20, help="conductance path steps (default 20)")
    p.add_argument("--sae-epochs", type=opt.positive_int, default=100, help="most epochs of each layer's SAE (default 100)")
    p.add_argument("--model-sta-samples", type=opt.positive_int, default=256,
                   help="white-noise windows for the model STA (mean gradient; default 256)")
    p.add_argument("--device", type=opt.device_name, default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--force", action="store_true", help="recompute every stage (the recording too only with "
                                                        "--resimulate)")
    p.add_argument("--no-classifiers", action="store_true", help="skip the classifier comparison")
    p.add_argument("--classifier-images", type=opt.positive_int, default=None,
                   help="digits per class for the classifier comparison (default: the whole test split)")


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0."""
    t0 = time.perf_counter()
    demo = run_demo(DemoSettings.from_args(args))
    print(f"done in {time.perf_counter() - t0:.1f} s; outputs in {demo.paths.out}/ (open "
          f"{demo.paths.report})")
    return 0
