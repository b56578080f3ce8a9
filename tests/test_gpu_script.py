"""``benchmarks/gpu.sh`` is run only on a lent GPU machine, where a wrong path costs device time: every test
file and benchmark script it names must exist, and every test marked ``gpu`` must be among the files it runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = (ROOT / "benchmarks" / "gpu.sh").read_text()


def test_every_path_named_in_gpu_sh_exists():
    named = set(re.findall(r"\b((?:tests|benchmarks)/[\w/]+\.py)\b", SCRIPT))
    assert named, "gpu.sh names no test or benchmark files"
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"gpu.sh names files that do not exist: {missing}"


def test_every_file_with_gpu_tests_is_run_by_gpu_sh():
    marked = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                    if re.search(r"pytest\.mark\.gpu|mark\.gpu\b", p.read_text()))
    assert marked, "no test is marked gpu"
    not_run = [p for p in marked if p not in SCRIPT]
    assert not not_run, f"files with gpu-marked tests that gpu.sh does not run: {not_run}"
