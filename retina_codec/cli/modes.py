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

import numpy as np

from .options import (
    add_overwrite_argument,
    add_responses_argument,
    add_session_argument,
    add_trust_argument,
    check_output,
    device_name,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the sub-command."""
    p = subparsers.add_parser(
        "modes", help="contribution modes (sparse autoencoder) of one layer of a contribution store",
        description="Train a sparse autoencoder on one layer's per-bin contribution vectors and store the "
                    "modes (alive atoms), per-bin loadings and held-out metrics in HDF5.")
    p.add_argument("contributions", help="contribution store (.h5) written by 'retina-codec contributions'")
    p.add_argument("--layer", required=True, help="layer name in the store (e.g. conv2)")
    p.add_argument("--out", required=True, help="output modes file (.h5)")
    p.add_argument("--target-index", type=non_negative_int, default=None,
                   help="which target of a per-cell contribution store (default: the store's only target)")
    p.add_argument("--kind", default="codec", choices=["codec", "topk", "batchtopk", "relu"])
    p.add_argument("--n-modes", type=positive_int, default=None, help="SAE latents K (default 10·d)")
    p.add_argument("--k", type=positive_int, default=8, help="active latents per bin for topk/batchtopk (default 8)")
    p.add_argument("--threshold", type=non_negative_float, default=0.9, help="CODEC threshold τ (default 0.9)")
    p.add_argument("--l1", type=non_negative_float, default=None, help="L1 weight (CODEC atoms 1e-4, ReLU codes 0.05)")
    p.add_argument("--center", action="store_true", help="remove the per-dimension mean before scaling")
    p.add_argument("--validation-fraction", type=fraction, default=0.1, help="held-out fraction (default 0.1)")
    p.add_argument("--max-epochs", type=positive_int, default=200,
                   help="most training epochs (default 200; at least 1: an untrained SAE is no result)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--learning-rate", type=positive_float, default=1e-3)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--device", type=device_name, default="auto", help="cpu, cuda (default: cuda when present)")
    p.add_argument("--nwb", default=None,
                   help="recording (.nwb) the contributions were computed on: also write a copy of it with the "
                        "loadings as a TimeSeries in a 'codec' processing module")
    p.add_argument("--nwb-out", default=None, help="path of that copy (default: <out stem>.nwb)")
    p.add_argument("--stimulus", default=None, help="stimulus series of the NWB file whose frame times the bins index")
    add_responses_argument(p, "with --nwb: ")
    add_overwrite_argument(p, "--out (and NWB copy, --nwb-out)")
    p.add_argument("--model", default=None,
                   help="with --nwb: the model the contributions were computed with; its predicted rates at the "
                        "same bins go into the 'codec' module beside the loadings (checked against the store's "
                        "model hash)")
    add_trust_argument(p, "--model")
    add_session_argument(p, "--model")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Fit the modes and write them; exit code 0."""
    from ..errors import ModesError, ShapeMismatchError
    from ..modes.decomposer import ModeDecomposer
    from ..modes.store import read_layer_contributions, write_modes

    data = read_layer_contributions(args.contributions, args.layer, args.target_index)
    rec = nwb_out = model = None
    if args.model and not args.nwb:
        raise ModesError("--model: the predicted rates go into the NWB copy; pass --nwb as well")
    if args.nwb_out and not args.nwb:
        raise ModesError("--nwb-out: names the NWB copy of the recording; pass the recording with --nwb as well")
    if args.nwb:  # check the recording and the copy's path before training, not after
        from pathlib import Path

        from ..recordings.nwb import read_nwb

        nwb_out = args.nwb_out or str(Path(args.out).with_suffix(".nwb"))
        if Path(nwb_out).resolve() == Path(args.nwb).resolve():
            raise ModesError(f"--nwb-out: {nwb_out} is the recording itself, which is never modified; "
                             "choose another --nwb-out (or --out)")
        check_output(nwb_out, args.overwrite)
        rec = read_nwb(args.nwb, stimulus=args.stimulus, responses=args.responses, validate=False)
        if data.bins.size and (data.bins.min() < 0 or data.bins.max() >= len(rec.frame_times)):
            raise ShapeMismatchError(f"{args.contributions}: bins {data.bins.min()}..{data.bins.max()} fall outside "
                                     f"the {len(rec.frame_times)} frames of {args.nwb}")
        if args.model:
            model = _checked_model(args, data.attrs.get("model_hash"))
    check_output(args.out, args.overwrite)
    dec = ModeDecomposer(kind=args.kind, n_modes=args.n_modes, k=args.k, threshold=args.threshold, l1=args.l1,
                         center=args.center, validation_fraction=args.validation_fraction,
                         max_epochs=args.max_epochs, batch_size=args.batch_size,
                         learning_rate=args.learning_rate, random_state=args.seed, device=args.device)
    dec.fit(data.X)
    link = {k: data.attrs[k] for k in ("method", "rule", "steps", "target", "reduction", "model_hash",
                                       "source", "package_version") if k in data.attrs}
    write_modes(args.out, dec, dec.transform(data.X), data.bins, contributions_path=data.path,
                layer=args.layer, target_index=data.target_index, contributions_attrs=link)
    if rec is not None:
        from ..modes.nwb_export import export_modes_nwb

        order = np.argsort(data.bins, kind="stable")
        rates = cells = None
        if model is not None:
            from ..models.fitting import predict

            _, rates = predict(model, rec, bins=data.bins[order], device=args.device)
            cells = model.cell_ids or (rec.cell_ids if len(rec.cell_ids) == rates.shape[1] else None)
        export_modes_nwb(args.nwb, nwb_out, dec.transform(data.X)[order], rec.frame_times[data.bins[order]],
                         rates=rates, cell_ids=cells, rate_unit=_rate_unit(model),
                         description=f"modes of layer {args.layer} from {data.path}",
                         overwrite=args.overwrite)
        log.info("%s: loadings%s on the recording's clock in processing/codec", nwb_out,
                 " and predicted rates" if rates is not None else "")
    log.info("%s: %d modes of %s/%s (%d bins × %d), held-out explained variance %.3f, mean L0 %.2f, "
             "dead fraction %.2f", args.out, dec.n_modes_, args.contributions, args.layer, data.X.shape[0],
             data.X.shape[1], dec.explained_variance_, dec.l0_, dec.dead_fraction_)
    return 0


def _rate_unit(model: object) -> str:
    """The unit of the model's predictions for the NWB copy: ``Hz`` for a model fitted to rates, else spikes per
    bin (``fit`` records it as the model's ``output_unit``)."""
    unit = str(getattr(model, "metadata", {}).get("output_unit", "")) if model is not None else ""
    return "Hz" if unit == "Hz" else "spikes per bin"


def _checked_model(args: argparse.Namespace, store_hash: object):
    """The ``--model`` checkpoint; a :class:`ModesError` when it is not the model of the contribution store."""
    from ..errors import ModesError
    from ..hashing import model_mismatch
    from ..models import load_model

    if store_hash is None:  # stripped attributes: the promised check cannot be made, so refuse
        raise ModesError(f"--model: {args.contributions}: attribute model_hash: expected the hash of the model the "
                         f"contributions were computed with, found none; cannot check that {args.model} is that "
                         "model (leave out --model to export the loadings without predicted rates)")
    model = load_model(args.model, trust=args.trust, session=args.session)
    differs = model_mismatch(model, store_hash)
    if differs:
        raise ModesError(f"--model: {args.model} is not the model the contributions in {args.contributions} were "
                         f"computed with ({differs})")
    return model
