"""Shared helpers for the model tests (not a test module)."""

import torch


def randomize_batchnorm(model, seed=0):
    """Give every BatchNorm non-trivial running statistics and affine parameters (in place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                dt = m.running_mean.dtype
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=dt) * 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=dt) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g, dtype=dt) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=dt) * 0.1)
    return model


def tdr_pickle_and_recording(folder, t=60):
    """``(pickle path, NWB path)``: a torch-deep-retina BN-CNN pickle that needs ``--trust`` (a Fraction in its
    hyper-parameters is outside torch's safe types) and a 14×14 recording of ``t`` frames it can run on."""
    import fractions

    import numpy as np
    from _tdr_reference import TDRBNCNN, make_reference, tdr_checkpoint

    from retina_codec.progress import quiet_scope
    from retina_codec.recordings import Recording
    from retina_codec.recordings.nwb import write_nwb

    ref = make_reference(TDRBNCNN, img_shape=(6, 14, 14), ksizes=(5, 3))
    ckpt = tdr_checkpoint(ref, "BNCNN", {"img_shape": [6, 14, 14], "ksizes": [5, 3]}, lr=fractions.Fraction(1, 1000))
    torch.save(ckpt, folder / "frac.pt")
    rng = np.random.default_rng(0)
    rec = Recording(stimulus=rng.random((t, 14, 14)).astype(np.float32), frame_times=np.arange(t) / 100.0,
                    frame_rate=100.0, responses=rng.poisson(1.0, (t, 4)).astype(np.float32),
                    intervals={"test": np.array([[0.0, t / 100.0]])}, stimulus_name="noise")
    with quiet_scope():  # the set-up writes silently: tests read the command's own stderr
        write_nwb(rec, folder / "rec.nwb")
    return folder / "frac.pt", folder / "rec.nwb"
