"""A tiny classifier network for the mode-intervention tests in tests/modes and tests/classifiers (not a test
module)."""

from torch import nn


class InterventionNet(nn.Module):
    """conv ``c1`` (1 -> 8 channels, 5x5 frames) -> ReLU ``act`` -> linear ``fc`` to 3 classes."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(8 * 5 * 5, 3)

    def forward(self, x):
        return self.fc(self.act(self.c1(x)).flatten(1))
