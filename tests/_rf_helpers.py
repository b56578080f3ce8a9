"""Small models, movies and CLI inputs shared by the RF tests in tests/rf and tests/cli (not a test module)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from retina_codec.recordings import Recording


class PlainTinyCNN(nn.Module):
    """One 3x3 conv (4 channels) and a softplus readout on 8x8 frames, no BatchNorm."""

    def __init__(self, h=4, n=3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(h, 4, 3)
        self.lin = nn.Linear(4 * 6 * 6, n)

    def forward(self, x):
        return nn.functional.softplus(self.lin(torch.relu(self.conv(x)).flatten(1)))


def movie_recording(t=70, seed=0):
    """A ``t``-frame 8x8 Gaussian movie (mean 3, std 2) with one silent cell."""
    rng = np.random.default_rng(seed)
    return Recording(rng.standard_normal((t, 8, 8)).astype(np.float32) * 2 + 3, np.arange(t) / 100.0, 100.0,
                     np.zeros((t, 1), np.float32))


def write_rf_cli_inputs(tmp_path):
    """A 200-frame 6x6 white-noise NWB file with train/test splits and a saved 3-cell LN model in ``tmp_path``;
    returns ``(model path, NWB path)`` as strings."""
    from retina_codec.models import save_model
    from retina_codec.models.ln import LNModel
    from retina_codec.recordings.nwb import write_nwb

    rng = np.random.default_rng(0)
    rec = Recording(rng.choice(np.array([-1.0, 1.0], np.float32), (200, 6, 6)), np.arange(200) / 100.0, 100.0,
                    rng.poisson(0.5, (200, 3)).astype(np.float32), cell_ids=["c0", "c1", "c2"],
                    intervals={"train": [[0, 1.6]], "test": [[1.6, 2.0]]})
    nwb = write_nwb(rec, tmp_path / "rec.nwb")
    model = save_model(LNModel(3, history=4, frame_shape=(6, 6), init_std=0.05), tmp_path / "model")
    return str(model), str(nwb)
