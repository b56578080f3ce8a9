"""Contributions of an openretina core-readout model: ours vs captum ``LayerConductance``, same model, steps, device.

A Maheswaranathan-2023-size ``UnifiedCoreReadout`` (1×50×50 input, a SimpleCoreWrapper core of 16 and 32
channels, space-time separable kernels 21×15×15 and 11×11×11, hidden layers padded in time as openretina does
by default; Gaussian-mask readout, 20 neurons; random weights) is saved as a Lightning checkpoint and read back
with ``load_model(..., session=...)``, as a user would. Both sides explain both core layers for the same bins
(target: the sum of the session's cells, 20 steps); our per-unit contributions are compared with captum's
(rule "left") before any ratio is printed. A second row times all cells' per-cell contributions in one pass.

usage: python benchmarks/bench_openretina.py [--bins 4] [--captum-bins 2] [--steps 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from bench_contributions import machine, timed


def build(device: torch.device) -> torch.nn.Module:
    """The Maheswaranathan-size openretina model (random weights), saved and loaded as a user would."""
    import lightning
    from omegaconf import OmegaConf
    from openretina.models.core_readout import UnifiedCoreReadout

    from retina_codec.models import load_model

    torch.manual_seed(0)
    core = OmegaConf.create({
        "_target_": "openretina.modules.core.base_core.SimpleCoreWrapper", "_convert_": "object",
        "gamma_input": 0.0, "gamma_hidden": 0.0, "gamma_in_sparse": 0.0, "gamma_temporal": 0.0,
        "input_padding": False, "hidden_padding": True, "convolution_type": "custom_separable",
        "temporal_kernel_sizes": [21, 11], "spatial_kernel_sizes": [15, 11], "cut_first_n_frames": 0,
        "dropout_rate": 0.0, "maxpool_every_n_layers": None, "downsample_input_kernel_size": None,
        "color_squashing_weights": None, "channels": "???"})
    readout = OmegaConf.create({"_target_": "openretina.modules.readout.multi_readout.MultiGaussianMaskReadout",
                                "_convert_": "object", "scale": True, "bias": True, "gaussian_mean_scale": 6.0,
                                "gaussian_var_scale": 4.0, "positive": True, "readout_reg_avg": False})
    info = {"n_neurons_dict": {"salamander": 20}, "input_shape": (1, 50, 50), "stim_mean": 0.0, "stim_std": 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = UnifiedCoreReadout(in_shape=(1, 60, 50, 50), n_neurons_dict={"salamander": 20}, core=core,
                                 readout=readout, hidden_channels=(16, 32), data_info=info)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, b in net.core.named_buffers():
                if name.endswith("running_var"):
                    b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
        path = Path(tempfile.mkdtemp()) / "maheswaranathan_size.ckpt"
        trainer = lightning.pytorch.Trainer(max_epochs=0, logger=False, enable_checkpointing=False,
                                            accelerator="cpu", enable_progress_bar=False,
                                            enable_model_summary=False)
        trainer.strategy.connect(net)
        trainer.save_checkpoint(str(path))
        return load_model(path, session="salamander", device=device)


def captum_run(model, x, layers, steps, device, ref: bool = False):
    from captum.attr import LayerConductance

    from retina_codec.torch_utils.hooks import resolve_module

    out = {}
    for name in layers:
        lc = LayerConductance(lambda z: model(z).sum(1), resolve_module(model, name))
        out[name] = [lc.attribute(x[i:i + 1].to(device), n_steps=steps, method="riemann_trapezoid").detach()
                     for i in range(len(x))]
    return {n: torch.cat(v).cpu().numpy() for n, v in out.items()} if ref else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bins", type=int, default=None, help="bins for our engine (default 4 CPU, 256 GPU)")
    p.add_argument("--captum-bins", type=int, default=None, help="bins for captum (default 2 CPU, 32 GPU)")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    bins, cbins = args.bins or (256 if gpu else 4), args.captum_bins or (32 if gpu else 2)
    from retina_codec.contributions import contributions

    model = build(device)
    layers = list(model.hidden_layers)
    h = model.input_spec.history
    x = torch.randn(bins, h, 50, 50, generator=torch.Generator().manual_seed(0)).to(device)
    print(f"torch {torch.__version__}, {machine(device)}")
    print(f"[openretina UnifiedCoreReadout, Maheswaranathan-2023 size: {h}-frame windows (receptive field), "
          f"layers {'+'.join(layers)}, {args.steps} steps, target sum, stem found: ", end="")

    def ours(xx, **kw):
        return contributions(model, xx, layers, target=kw.pop("target", "sum"), steps=args.steps, device=device,
                             quiet=True, **kw)

    agree = ours(x[:1], rule="left", reduce=None, batch_size=1)
    print("+".join(agree.settings["affine_stem"]) or "none", "]")
    ref = captum_run(model, x[:1], layers, args.steps, device, ref=True)
    err = max(float(np.abs(agree[n] - ref[n]).max() / max(np.abs(ref[n]).max(), 1e-30)) for n in layers)
    captum_run(model, x[:1], layers, args.steps, device)  # warm-up
    t_cap = timed(lambda: captum_run(model, x[:cbins], layers, args.steps, device), device)
    ours(x[:2])  # warm-up
    box = []
    t_ours = timed(lambda: box.append(ours(x)), device)
    comp = "/".join(f"{box[0].summary()[n]['total_rel']:.2%}" for n in layers)
    cap, us = cbins / t_cap, bins / t_ours
    verdict = f"ratio ours/captum = {us / cap:.1f}x" if err <= 1e-3 else "DIFFERS from captum: no ratio"
    print(f"  captum LayerConductance per layer: {cbins} bins in {t_cap:.2f} s = {cap:.3f} bins/s")
    print(f"  ours: {bins} bins in {t_ours:.2f} s = {us:.3f} bins/s (completeness error {comp}, max rel. diff vs "
          f"captum {err:.1e}) -> {verdict}")
    n_cells = model.n_cells
    t_cells = timed(lambda: ours(x[:2], target=list(range(n_cells))), device)
    print(f"  ours, per-cell ({n_cells} cells, one batched pass): 2 bins in {t_cells:.2f} s = "
          f"{2 / t_cells:.3f} bins/s")


if __name__ == "__main__":
    main()
