"""Bad input on the command line: one stderr line, exit 2, no partial output (cases in _bad_input_cases.py)."""

from __future__ import annotations

import pytest
from _bad_input_cases import CASES

from retina_codec.cli.main import main


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_cli_prints_one_line_exits_2_and_writes_nothing(case, tmp_path, capsys):
    c = CASES[case]
    path = c.make(tmp_path)
    out = tmp_path / "out" / "converted.nwb"
    argv = [c.cli, str(path), *c.cli_args] + ([str(out)] if c.cli == "convert" else [])
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"retina-codec {c.cli}: error: ") and str(path) in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not out.parent.exists() or list(out.parent.iterdir()) == []

@pytest.mark.parametrize("case", [k for k in CASES if k.startswith(("nwb_", "not_hdf5_nwb"))])
def test_bad_nwb_input_inspect_prints_one_line_and_exits_2(case, tmp_path, capsys):
    path = CASES[case].make(tmp_path)
    capsys.readouterr()
    assert main(["inspect", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("retina-codec inspect: error: ") and str(path) in lines[0]
    assert captured.out == ""

@pytest.mark.parametrize("case", ["nwb_missing_stimulus", "nwb_shape_mismatch"])
def test_cli_subprocess_prints_exactly_one_line_and_no_traceback(case, tmp_path):
    import subprocess
    import sys

    path = CASES[case].make(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "retina_codec", "inspect", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in proc.stderr, proc.stderr
