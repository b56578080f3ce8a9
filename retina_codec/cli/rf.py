"""``retina-codec rf MODEL REC.nwb [--modes MODES.h5] --out RF.h5``: receptive fields and their figures.

Computes, for the chosen cells of a recording: the STA from recorded spikes (when the responses are
counts), the model STA (mean input gradient over white noise), and, with ``--modes``, the mode-conditioned
RFs (single modes and exact combinations) and dynamic-RF sources in one streamed pass over the bins the
modes were computed on. Writes ``RF.h5`` atomically and PNG figures (RF grid, rank-1 panels, one
CODEC Fig. 8-style gallery per cell) into ``--figures`` (default: ``<out stem>_figures/``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..plots.rf_figures import write_figures
from ..rf.estimate import estimate_rfs
from . import options as opt

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``rf`` sub-command."""
    p = opt.add_command(
        subparsers, "rf", run, help="STA, model STA, mode-conditioned RFs and dynamic-RF sources, with figures",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("model", help="fitted model checkpoint (retina-codec folder, torch-deep-retina .pt or openretina .ckpt)")
    p.add_argument("recording", help="recording (.nwb)")
    p.add_argument("--out", required=True, help="output HDF5 file (written under a temporary name, renamed)")
    opt.add_overwrite_argument(p)
    p.add_argument("--modes", help="modes file with per-bin loadings (datasets 'loadings' (T_b, K) and 'bins')")
    p.add_argument("--stimulus", help="stimulus series name in the NWB file (when it has several)")
    opt.add_responses_argument(p)
    p.add_argument("--split", help="split whose bins the STA uses ('all' or default: every bin of the stimulus "
                   "— a recorded-spike STA needs no held-out data, and more bins give a cleaner STA)")
    p.add_argument("--cells", nargs="+", help="cell ids or indices (default: every cell)")
    p.add_argument("--threshold", type=opt.finite_float, default=0.0, help="a mode is active when its loading > this")
    p.add_argument("--max-combinations", type=opt.positive_int, default=16, help="most frequent exact combinations kept")
    p.add_argument("--keep", choices=("full", "rank1"), default="full",
                   help="accumulate full IRFs (default) or only each bin's rank-1 parts (less memory)")
    p.add_argument("--model-sta-samples", type=opt.non_negative_int, default=1024,
                   help="white-noise windows for the model STA (default 1024; 0 skips it)")
    p.add_argument("--batch-size", type=opt.positive_int, default=64, help="windows per IRF batch")
    p.add_argument("--device", type=opt.device_name, default="auto", help="torch device (auto: CUDA when present)")
    opt.add_trust_argument(p)
    opt.add_session_argument(p)
    p.add_argument("--figures", help="figure folder (default: <out stem>_figures next to OUT)")
    p.add_argument("--no-figures", action="store_true", help="write no figures")


def run(args: argparse.Namespace) -> int:
    """Compute, store and plot; returns 0."""
    opt.check_output(args.out, args.overwrite)
    est = estimate_rfs(args.model, args.recording, args.out, modes=args.modes, stimulus=args.stimulus,
                       responses=args.responses, split=args.split, cells=args.cells, threshold=args.threshold,
                       max_combinations=args.max_combinations, keep=args.keep,
                       model_sta_samples=args.model_sta_samples, batch_size=args.batch_size, device=args.device,
                       trust=args.trust, session=args.session)
    log.info("wrote %s (%s)", args.out, ", ".join(est.groups))
    if est.results["sta"] is None:
        log.info("no STA: the responses of %s are rates (%s), not spike counts", args.recording, est.response_unit)
    if not args.no_figures:
        fig_dir = Path(args.figures) if args.figures else Path(args.out).with_name(Path(args.out).stem + "_figures")
        written = write_figures(est.results, fig_dir, mode_names=est.mode_names, frame_rate=est.frame_rate)
        log.info("wrote %d figures to %s", len(written), fig_dir)
    return 0
