"""``retina-codec rf``: the command runs every RF estimate on the device it is given."""

from __future__ import annotations

import pytest
import torch
from _rf_helpers import write_rf_cli_inputs

from retina_codec.cli.main import main


@pytest.fixture()
def rf_inputs(tmp_path):
    model, nwb = write_rf_cli_inputs(tmp_path)
    return tmp_path, model, nwb


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
