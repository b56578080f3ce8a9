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

from ..classifiers.comparison import compare_classifier
from ..plots.classifier_figures import write_comparison_figures
from ..stats import sparsity_verdict
from . import options as opt

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the sub-command."""
    p = opt.add_command(
        subparsers, "classify-stats", run, help="contribution vs activation statistics, modes and masks of an image classifier",
        description="Per-layer Hoyer sparsity, class-mean dimensionality and E/I correlation of contributions "
                    "and activations, contribution vs activation modes with ablation/preservation sweeps, and "
                    "mode masks; HDF5 + figures.")
    p.add_argument("model", help="digits-cnn, a digits-CNN folder, torchvision:<arch>, timm:<arch> or <arch>")
    p.add_argument("images", help="'digits' / 'digits:train' or an ImageFolder directory")
    p.add_argument("--out", required=True, help="output folder (stats.h5 and figures)")
    p.add_argument("--weights", default=None, help="local state-dict file (.safetensors or torch.save)")
    p.add_argument("--random-weights", action="store_true", help="allow an architecture without --weights")
    p.add_argument("--num-classes", type=opt.positive_int, default=None, help="classifier outputs (architectures only)")
    p.add_argument("--layers", default=None,
                   help="comma-separated layers, aliases or groups (blocks, mlp, attention, heads, all); "
                        "default: the model's blocks")
    p.add_argument("--target", default="top1_logit", choices=["top1_logit", "softmax_prob", "contrastive"])
    p.add_argument("--method", default="conductance", choices=["conductance", "layer_ig", "act_grad", "act_normgrad"])
    p.add_argument("--steps", type=opt.positive_int, default=10, help="path steps m (default 10, the classifier setting)")
    p.add_argument("--batch-size", type=opt.positive_int_or_auto, default="auto", help="images per chunk (default: from the memory budget)")
    p.add_argument("--max-per-class", type=opt.positive_int, default=None, help="use at most this many images per class")
    p.add_argument("--no-modes", action="store_true", help="statistics only (no modes, sweeps or masks)")
    p.add_argument("--mode-images", default=None,
                   help="images to fit the modes on and choose each class's top mode with (e.g. digits:train); "
                        "default: IMAGES")
    p.add_argument("--mode-layer", default=None, help="layer for modes, sweeps and masks (default: the last)")
    p.add_argument("--n-modes", type=opt.positive_int, default=None, help="SAE latents (default 3·d)")
    p.add_argument("--n-fractions", type=opt.int_at_least(2), default=9, help="fractions p in [0, 1] of the sweeps (default 9)")
    p.add_argument("--mask-images", type=opt.positive_int, default=6, help="top-loading images per mode in the masks (default 6)")
    p.add_argument("--mask-fraction", type=opt.open_probability, default=0.1, help="fraction of top channels for masks (0.1)")
    p.add_argument("--seed", type=opt.non_negative_int, default=0)
    p.add_argument("--threads", type=opt.positive_int, default=None, help="CPU threads for torch (default: torch's choice)")
    opt.add_overwrite_argument(p, "DIR/stats.h5")
    return p


def run(args: argparse.Namespace) -> int:
    """Compute, write stats.h5 and the figures; exit code 0."""
    cmp = compare_classifier(args.model, args.images, args.out, weights=args.weights,
                             random_weights=args.random_weights, num_classes=args.num_classes, layers=args.layers,
                             target=args.target, method=args.method, steps=args.steps,
                             batch_size=opt.positive_int_or_auto(str(args.batch_size)),
                             max_per_class=args.max_per_class, modes=not args.no_modes,
                             mode_images=args.mode_images, mode_layer=args.mode_layer, n_modes=args.n_modes,
                             n_fractions=args.n_fractions, mask_images=args.mask_images,
                             mask_fraction=args.mask_fraction, seed=args.seed, threads=args.threads,
                             overwrite=args.overwrite)
    write_comparison_figures(cmp, args.out)
    for line in cmp.summary_lines():
        log.info("%s", line)
    print(sparsity_verdict(cmp.result.stats, cmp.result.aliases))
    return 0
