"""Small models for the contribution-engine tests: a retina BN-CNN with trained-looking weights and a
ResNet-like network with skip connections."""

from __future__ import annotations

import torch
from torch import nn

from retina_codec.models import BNCNN


def _randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.running_mean.shape[0]
            m.running_mean.copy_(0.3 * torch.randn(n, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            m.weight.data.copy_(0.8 + 0.4 * torch.rand(n, generator=gen))
            m.bias.data.copy_(0.2 * torch.randn(n, generator=gen))


def small_bncnn(n_cells: int = 5, history: int = 6, frame: int = 14, seed: int = 0,
                kernel_sizes: tuple[int, int] = (5, 3)) -> BNCNN:
    """A small BN-CNN (same block structure as the full one) with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = BNCNN(n_cells, history=history, frame_shape=(frame, frame), kernel_sizes=kernel_sizes)
    gen = torch.Generator().manual_seed(seed + 1)
    _randomize_bn(model, gen)
    with torch.no_grad():
        model.readout.bn.running_mean.mul_(0.0)
        model.readout.bn.bias.data.copy_(torch.linspace(-0.5, 0.5, n_cells))
    return model.eval()


class Block(nn.Module):
    """conv → bn → relu → conv → bn, plus a (projected) skip, → relu."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + self.skip(x))


class TinyResNet(nn.Module):
    """Stem conv+bn (affine), two residual blocks, global pooling and a linear classifier."""

    def __init__(self, n_classes: int = 6, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem_conv = nn.Conv2d(3, 6, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(6)
        self.block1 = Block(6, 6)
        self.block2 = Block(6, 8)
        self.fc = nn.Linear(8, n_classes)
        self.affine_stem = ("stem_conv", "stem_bn")
        _randomize_bn(self, torch.Generator().manual_seed(seed + 7))
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem_conv(x)))
        x = self.block2(self.block1(x))
        return self.fc(x.mean(dim=(2, 3)))
