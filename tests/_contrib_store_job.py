"""Subprocess job for the store tests: writes contributions of a small seeded BN-CNN.

usage: python _contrib_store_job.py OUT [slow]   (also run under torchrun for the sharding test)
With ``slow`` every chunk prints ``computing <k>`` and sleeps first, so a test can SIGKILL it mid-run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

sys.path.insert(0, str(Path(__file__).parent))

from _contrib_models import small_bncnn  # noqa: E402

from retina_codec.contributions.engine import ContributionEngine  # noqa: E402
from retina_codec.contributions.store import write_contributions  # noqa: E402

N, CHUNK = 60, 6


def job_inputs() -> tuple[torch.nn.Module, torch.Tensor]:
    model = small_bncnn(n_cells=4, seed=2)
    x = torch.randn(N, 6, 14, 14, generator=torch.Generator().manual_seed(11))
    return model, x


def run(out: str, slow: bool = False) -> None:
    model, x = job_inputs()
    if slow:
        orig = ContributionEngine.compute
        count = [0]

        def compute(self, xx):
            print(f"computing {count[0]}", flush=True)
            count[0] += 1
            time.sleep(0.3)
            return orig(self, xx)

        ContributionEngine.compute = compute
    write_contributions(model, x, out, ["conv1", "conv2"], target="surprisal", steps=5, batch_size=CHUNK,
                        quiet=True, device="cpu")


if __name__ == "__main__":
    run(sys.argv[1], slow=len(sys.argv) > 2 and sys.argv[2] == "slow")
