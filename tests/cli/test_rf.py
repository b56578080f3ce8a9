"""``retina-codec rf``: the command runs every RF estimate on the device it is given."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retina_codec.cli.main import main
from retina_codec.recordings import Recording


@pytest.fixture()
def rf_inputs(tmp_path):
    from retina_codec.models import save_model
    from retina_codec.models.ln import LNModel
    from retina_codec.recordings.nwb import write_nwb

    rng = np.random.default_rng(0)
    rec = Recording(rng.choice(np.array([-1.0, 1.0], np.float32), (200, 6, 6)), np.arange(200) / 100.0, 100.0,
                    rng.poisson(0.5, (200, 3)).astype(np.float32), cell_ids=["c0", "c1", "c2"],
                    intervals={"train": [[0, 1.6]], "test": [[1.6, 2.0]]})
    nwb = write_nwb(rec, tmp_path / "rec.nwb")
    model = save_model(LNModel(3, history=4, frame_shape=(6, 6), init_std=0.05), tmp_path / "model")
    return tmp_path, str(model), str(nwb)


def test_rf_device_cpu_computes_the_sta_on_the_cpu(rf_inputs, monkeypatch):
    # the STA's correlator used to get no device, so `--device cpu` left it on CUDA when a GPU was present
    import retina_codec.rf.sta as sta_mod

    seen = []
    real = sta_mod.WindowCorrelator

    class Spy(real):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs.get("device"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(sta_mod, "WindowCorrelator", Spy)
    tmp, model, nwb = rf_inputs
    assert main(["-q", "rf", model, nwb, "--device", "cpu", "--model-sta-samples", "0", "--no-figures",
                 "--out", str(tmp / "rf.h5")]) == 0
    assert len(seen) == 1 and seen[0] is not None and torch.device(seen[0]).type == "cpu", seen
