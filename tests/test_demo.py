"""The README's first command: `retina-codec demo` runs end to end on the simulated retina."""

from retina_codec.cli.main import main
from retina_codec.recordings import read_nwb


def test_demo_simulates_writes_and_describes_a_recording(tmp_path, capsys):
    assert main(["-q", "demo", "--preset", "small", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    nwb = tmp_path / "simulated_retina_small_seed0.nwb"
    assert nwb.exists()
    assert "stimulus 'naturalscene'" in out and "stimulus 'whitenoise'" in out
    assert "ground truth: yes" in out
    with read_nwb(nwb, stimulus="whitenoise") as rec:
        assert rec.n_cells >= 16 and rec.ground_truth is not None
    # a second run reuses the recording instead of simulating again
    assert main(["-q", "demo", "--preset", "small", "--out", str(tmp_path)]) == 0
    assert "using the simulated recording already" in capsys.readouterr().out
