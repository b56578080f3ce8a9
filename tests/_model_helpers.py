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
