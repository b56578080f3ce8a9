"""``retina-codec modes CONTRIB.h5 --layer conv2 --out MODES.h5``: contribution modes of one layer.

Reads the layer's reduced contributions (bins × d) from a contribution store, trains a sparse autoencoder
(the CODEC SAE by default; TopK, BatchTopK or ReLU on request), drops dead atoms and writes atoms,
per-bin loadings, held-out metrics, settings and the link back to the contribution store to one HDF5
file (atomically). Example::

    retina-codec modes contrib.h5 --layer conv2 --out modes.h5 --kind codec --center
"""

from __future__ import annotations

import argparse
import logging

from ..modes.decomposer import KINDS
from ..modes.from_store import modes_from_store
from . import options as opt

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the sub-command."""
    p = opt.add_command(
        subparsers, "modes", run, help="contribution modes (sparse autoencoder) of one layer of a contribution store",
        description="Train a sparse autoencoder on one layer's per-bin contribution vectors and store the "
                    "modes (alive atoms), per-bin loadings and held-out metrics in HDF5.")
    p.add_argument("contributions", help="contribution store (.h5) written by 'retina-codec contributions'")
    p.add_argument("--layer", required=True, help="layer name in the store (e.g. conv2)")
    p.add_argument("--out", required=True, help="output modes file (.h5)")
    p.add_argument("--target-index", type=opt.non_negative_int, default=None,
                   help="which target of a per-cell contribution store (default: the store's only target)")
    p.add_argument("--kind", default="codec", choices=list(KINDS))
    p.add_argument("--n-modes", type=opt.positive_int, default=None, help="SAE latents K (default 10·d)")
    p.add_argument("--k", type=opt.positive_int, default=8, help="active latents per bin for topk/batchtopk (default 8)")
    p.add_argument("--threshold", type=opt.non_negative_float, default=0.9, help="CODEC threshold τ (default 0.9)")
    p.add_argument("--l1", type=opt.non_negative_float, default=None, help="L1 weight (CODEC atoms 1e-4, ReLU codes 0.05)")
    p.add_argument("--center", action="store_true", help="remove the per-dimension mean before scaling")
    p.add_argument("--validation-fraction", type=opt.fraction, default=0.1, help="held-out fraction (default 0.1)")
    p.add_argument("--max-epochs", type=opt.positive_int, default=200,
                   help="most training epochs (default 200; at least 1: an untrained SAE is no result)")
    p.add_argument("--batch-size", type=opt.positive_int, default=256)
    p.add_argument("--learning-rate", type=opt.positive_float, default=1e-3)
    p.add_argument("--seed", type=opt.non_negative_int, default=0)
    p.add_argument("--device", type=opt.device_name, default="auto", help="cpu, cuda (default: cuda when present)")
    p.add_argument("--nwb", default=None,
                   help="recording (.nwb) the contributions were computed on: also write a copy of it with the "
                        "loadings as a TimeSeries in a 'codec' processing module")
    p.add_argument("--nwb-out", default=None, help="path of that copy (default: <out stem>.nwb)")
    p.add_argument("--stimulus", default=None, help="stimulus series of the NWB file whose frame times the bins index")
    opt.add_responses_argument(p, "with --nwb: ")
    opt.add_overwrite_argument(p, "--out (and NWB copy, --nwb-out)")
    p.add_argument("--model", default=None,
                   help="with --nwb: the model the contributions were computed with; its predicted rates at the "
                        "same bins go into the 'codec' module beside the loadings (checked against the store's "
                        "model hash)")
    opt.add_trust_argument(p, "--model")
    opt.add_session_argument(p, "--model")
    return p


def run(args: argparse.Namespace) -> int:
    """Fit the modes and write them; exit code 0."""
    res = modes_from_store(args.contributions, args.layer, args.out, target_index=args.target_index, kind=args.kind,
                           n_modes=args.n_modes, k=args.k, threshold=args.threshold, l1=args.l1, center=args.center,
                           validation_fraction=args.validation_fraction, max_epochs=args.max_epochs,
                           batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed,
                           device=args.device, nwb=args.nwb, nwb_out=args.nwb_out, stimulus=args.stimulus,
                           responses=args.responses, model=args.model, trust=args.trust, session=args.session,
                           overwrite=args.overwrite)
    if res.nwb_out is not None:
        log.info("%s: loadings%s on the recording's clock in processing/codec", res.nwb_out,
                 " and predicted rates" if res.with_rates else "")
    dec, x = res.decomposer, res.data.X
    log.info("%s: %d modes of %s/%s (%d bins × %d), held-out explained variance %.3f, mean L0 %.2f, "
             "dead fraction %.2f", args.out, dec.n_modes_, args.contributions, args.layer, x.shape[0],
             x.shape[1], dec.explained_variance_, dec.l0_, dec.dead_fraction_)
    return 0
