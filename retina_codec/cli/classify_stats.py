"""``retina-codec classify-stats MODEL IMAGES --out DIR``: the CODEC classifier comparison.

MODEL is ``digits-cnn`` (the shipped digits CNN), a digits-CNN checkpoint folder, or ``torchvision:<arch>``
/ ``timm:<arch>`` / a bare torchvision architecture with ``--weights FILE`` (a local state dict; nothing is
downloaded; ``--random-weights`` for an untrained model). IMAGES is ``digits`` (the bundled digits' test
split; ``digits:train`` for the train split) or a folder of class sub-folders (ImageFolder layout).

Writes ``DIR/stats.h5`` (per-layer contribution vs activation statistics, modes, ablation / preservation
sweeps and masks; self-describing attributes; atomic) and the figures ``DIR/layer_stats.png``,
``DIR/interventions.png``, ``DIR/masks_contributions.png``, ``DIR/masks_activations.png``. Example::

    retina-codec classify-stats digits-cnn digits --mode-images digits:train --out results/digits
    retina-codec classify-stats resnet50 imagenet_val/ --weights resnet50.safetensors --layers blocks \\
        --max-per-class 5 --out results/resnet50
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from .options import (
    add_overwrite_argument,
    int_at_least,
    non_negative_int,
    open_probability,
    positive_int,
    positive_int_or_auto,
)

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the sub-command."""
    p = subparsers.add_parser(
        "classify-stats", help="contribution vs activation statistics, modes and masks of an image classifier",
        description="Per-layer Hoyer sparsity, class-mean dimensionality and E/I correlation of contributions "
                    "and activations, contribution vs activation modes with ablation/preservation sweeps, and "
                    "mode masks; HDF5 + figures.")
    p.add_argument("model", help="digits-cnn, a digits-CNN folder, torchvision:<arch>, timm:<arch> or <arch>")
    p.add_argument("images", help="'digits' / 'digits:train' or an ImageFolder directory")
    p.add_argument("--out", required=True, help="output folder (stats.h5 and figures)")
    p.add_argument("--weights", default=None, help="local state-dict file (.safetensors or torch.save)")
    p.add_argument("--random-weights", action="store_true", help="allow an architecture without --weights")
    p.add_argument("--num-classes", type=positive_int, default=None, help="classifier outputs (architectures only)")
    p.add_argument("--layers", default=None,
                   help="comma-separated layers, aliases or groups (blocks, mlp, attention, heads, all); "
                        "default: the model's blocks")
    p.add_argument("--target", default="top1_logit", choices=["top1_logit", "softmax_prob", "contrastive"])
    p.add_argument("--method", default="conductance", choices=["conductance", "layer_ig", "act_grad", "act_normgrad"])
    p.add_argument("--steps", type=positive_int, default=10, help="path steps m (default 10, the classifier setting)")
    p.add_argument("--batch-size", type=positive_int_or_auto, default="auto", help="images per chunk (default: from the memory budget)")
    p.add_argument("--max-per-class", type=positive_int, default=None, help="use at most this many images per class")
    p.add_argument("--no-modes", action="store_true", help="statistics only (no modes, sweeps or masks)")
    p.add_argument("--mode-images", default=None,
                   help="images to fit the modes on and choose each class's top mode with (e.g. digits:train); "
                        "default: IMAGES")
    p.add_argument("--mode-layer", default=None, help="layer for modes, sweeps and masks (default: the last)")
    p.add_argument("--n-modes", type=positive_int, default=None, help="SAE latents (default 3·d)")
    p.add_argument("--n-fractions", type=int_at_least(2), default=9, help="fractions p in [0, 1] of the sweeps (default 9)")
    p.add_argument("--mask-images", type=positive_int, default=6, help="top-loading images per mode in the masks (default 6)")
    p.add_argument("--mask-fraction", type=open_probability, default=0.1, help="fraction of top channels for masks (0.1)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch (default: torch's choice)")
    add_overwrite_argument(p, "DIR/stats.h5")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Compute, write stats.h5 and the figures; exit code 0."""
    import torch

    from ..classifiers import (
        classify_stats,
        load_classifier,
        load_images,
        resolve_layers,
        write_classify_stats,
    )
    from ..errors import CheckpointError, OutputExistsError, RetinaCodecError
    from ..plots.masks import plot_mode_masks
    from ..plots.stats import plot_intervention_curves, plot_layer_stats
    from ..stats import sparsity_verdict

    out = Path(args.out)
    h5 = out / "stats.h5"
    if h5.exists() and not args.overwrite:
        raise OutputExistsError(f"{h5}: exists already (pass --overwrite to replace it)")
    is_arch = str(args.model) != "digits-cnn" and not Path(args.model).exists()
    if is_arch and args.weights is None and not args.random_weights:
        raise CheckpointError(f"model {args.model!r}: pass --weights FILE (a local state dict) or --random-weights")
    if args.steps < 1 or args.n_fractions < 2:
        raise RetinaCodecError(f"--steps must be >= 1 and --n-fractions >= 2; found {args.steps}, {args.n_fractions}")
    batch = positive_int_or_auto(str(args.batch_size))
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(max(1, args.threads))
    model = load_classifier(args.model, weights=args.weights, num_classes=args.num_classes)
    layers = resolve_layers(model, args.layers)
    images = load_images(args.images, model, max_per_class=args.max_per_class, seed=args.seed)
    if len(np.unique(images.y.numpy())) < 2:
        raise RetinaCodecError(f"{args.images}: expected images of at least two classes")
    mode_images = load_images(args.mode_images, model, max_per_class=args.max_per_class,
                              seed=args.seed) if args.mode_images else None
    mode_layer = resolve_layers(model, args.mode_layer)[0] if args.mode_layer else None
    if mode_layer is not None and mode_layer not in layers:
        layers.append(mode_layer)
    try:
        res = classify_stats(model, images, layers, target=args.target, method=args.method, steps=args.steps,
                             batch_size=batch, modes=not args.no_modes, mode_layer=mode_layer, n_modes=args.n_modes,
                             fractions=tuple(np.linspace(0.0, 1.0, args.n_fractions)), mask_images=args.mask_images,
                             mask_fraction=args.mask_fraction, seed=args.seed,
                             mode_images=mode_images)
    except ValueError as err:
        raise RetinaCodecError(str(err)) from err
    write_classify_stats(h5, res, model, images, model_spec=str(args.model),
                         mode_images_source=mode_images.source if mode_images else "")
    name = Path(str(args.model)).name
    plot_layer_stats(res.stats, out / "layer_stats.png", labels=res.aliases,
                     title=f"{name} on {images.source}: contributions vs activations ({len(images)} images)")
    if res.sweeps:
        plot_intervention_curves(res.sweeps, out / "interventions.png",
                                 title=f"{name}, layer {res.mode_layer}: class top-mode interventions")
    for src, mm in res.masks.items():
        imgs = [images.x[torch.from_numpy(rows)].numpy() for rows in mm.image_index]
        titles = [[f"{images.class_names[int(images.y[i])]}" for i in rows] for rows in mm.image_index]
        plot_mode_masks(imgs, mm.masks, out / f"masks_{src}.png",
                        row_titles=[f"class {images.class_names[int(c)]}\nmode {int(m)}" for c, m in zip(mm.classes, mm.modes)],
                        col_titles=titles, title=f"{src} modes at {res.mode_layer}: Jacobian-chain masks")
    log.info("accuracy %.3f on %d images; wrote %s", res.accuracy, len(images), h5)
    for st, alias in zip(res.stats, res.aliases):
        s = st.summary()
        log.info("%-10s Hoyer contrib %.3f act %.3f | PCs %d/%d | E/I %.3f", alias, s["hoyer_contrib"],
                 s["hoyer_act"], s["n_pcs_contrib"], s["n_pcs_act"], s["ei_correlation_contrib"])
    print(sparsity_verdict(res.stats, res.aliases))
    return 0
