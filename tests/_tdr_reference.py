"""torch-deep-retina reference modules and checkpoints, built the torch-deep-retina way (one ``nn.Sequential``
called ``sequential`` with Flatten/Reshape between layers and a GaussianNoise holding a ``sigma``
parameter), so their state-dict names are those of its ``BNCNN`` / ``BNCNN2D``; the checkpoints are dicts
with the keys its trainer writes. Used by tests/models/test_tdr_import.py, _model_helpers and (Flatten, Reshape)
tests/models/test_tdr_real.py."""

import numpy as np
import torch
from _model_helpers import randomize_batchnorm
from torch import nn


class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.shape[0], -1)


class Reshape(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.view(self.shape)


class TDRNoise(nn.Module):
    """torch-deep-retina's GaussianNoise: a (non-trained) ``sigma`` parameter, noise only in training."""

    def __init__(self, std):
        super().__init__()
        self.sigma = nn.Parameter(torch.ones(1) * std, requires_grad=False)

    def forward(self, x):
        return x + self.sigma * torch.randn_like(x) if self.training else x


class TDRBNCNN(nn.Module):
    """torch-deep-retina's BNCNN module list (``TDRModel`` generation unless ``old``)."""

    def __init__(self, n_units, img_shape=(40, 50, 50), chans=(8, 8), ksizes=(15, 11), noise=0.05,
                 bn_moment=0.01, linear_bias=False, old=False):
        super().__init__()
        s1 = img_shape[1] - ksizes[0] + 1
        s2 = s1 - ksizes[1] + 1
        self.sequential = nn.Sequential(
            nn.Conv2d(img_shape[0], chans[0], ksizes[0]), Flatten(),
            nn.BatchNorm1d(chans[0] * s1 * s1, eps=1e-3, momentum=bn_moment), TDRNoise(noise), nn.ReLU(),
            Reshape((-1, chans[0], s1, s1)), nn.Conv2d(chans[0], chans[1], ksizes[1]), Flatten(),
            nn.BatchNorm1d(chans[1] * s2 * s2, eps=1e-3, momentum=bn_moment), TDRNoise(noise), nn.ReLU(),
            nn.Linear(chans[1] * s2 * s2, n_units, bias=linear_bias),
            nn.BatchNorm1d(n_units) if old else nn.BatchNorm1d(n_units, eps=1e-3, momentum=bn_moment),
            nn.Softplus(),
        )

    def forward(self, x):
        return self.sequential(x)


class TDRBNCNN2D(nn.Module):
    """torch-deep-retina's BNCNN2D (BatchNorm2d) module list."""

    def __init__(self, n_units, img_shape=(40, 50, 50), chans=(8, 8), ksizes=(15, 11), noise=0.05):
        super().__init__()
        s2 = img_shape[1] - ksizes[0] - ksizes[1] + 2
        self.sequential = nn.Sequential(
            nn.Conv2d(img_shape[0], chans[0], ksizes[0]), nn.BatchNorm2d(chans[0], eps=1e-3), TDRNoise(noise),
            nn.ReLU(), nn.Conv2d(chans[0], chans[1], ksizes[1]), nn.BatchNorm2d(chans[1], eps=1e-3),
            TDRNoise(noise), nn.ReLU(), Flatten(), nn.Linear(chans[1] * s2 * s2, n_units), nn.BatchNorm1d(n_units),
            nn.Softplus(),
        )

    def forward(self, x):
        return self.sequential(x)


def tdr_checkpoint(model, model_type, hyps, **extra):
    """A dict with the keys torch-deep-retina's trainer saves (numpy scalars and arrays included)."""
    return {
        "model_type": model_type, "model_hyps": hyps, "model_state_dict": model.state_dict(),
        "optim_state_dict": torch.optim.Adam(model.parameters()).state_dict(), "loss": 0.31, "epoch": 12,
        "val_loss": 0.33, "val_acc": np.float64(0.61), "exp_val_acc": None, "test_pearson": 0.58,
        "norm_stats": {"mean": np.float32(51.25), "std": np.float32(30.5)},
        "y_stats": {"mean": np.arange(4, dtype=np.float32), "std": np.ones(4)},
        "dataset": "15-10-07", "cells": [0, 1, 2, 3], "stim_type": "naturalscene",
        "img_shape": hyps.get("img_shape", [40, 50, 50]), "lr": 1e-3, "batch_size": 512, **extra,
    }


def make_reference(cls, seed=0, **kw):
    torch.manual_seed(seed)
    model = randomize_batchnorm(cls(4, **kw), seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)
    return model.eval()
