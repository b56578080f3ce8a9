"""NWB export: mode loadings and predicted rates as TimeSeries in a ``codec`` module of a copy."""


import numpy as np
import pytest
from pynwb import NWBHDF5IO, TimeSeries
from pynwb.testing.mock.file import mock_NWBFile

from retina_codec.errors import ModesError
from retina_codec.modes.nwb_export import export_modes_nwb


@pytest.fixture
def recording_nwb(tmp_path):
    nwb = mock_NWBFile()
    nwb.add_acquisition(TimeSeries(name="stimulus_luminance", data=np.arange(50, dtype=np.float32),
                                   unit="a.u.", rate=100.0, starting_time=0.0))
    path = tmp_path / "rec.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def test_export_appends_codec_module_on_the_recording_time_axis(tmp_path, recording_nwb):
    rng = np.random.default_rng(0)
    bins = np.arange(10, 40)
    ts = bins / 100.0
    loadings = rng.random((30, 3)).astype(np.float32)
    rates = rng.random((30, 2)).astype(np.float32)
    before = recording_nwb.read_bytes()
    out = export_modes_nwb(recording_nwb, tmp_path / "rec_codec.nwb", loadings, ts, rates=rates,
                           cell_ids=["on0", "off0"], rate_unit="Hz")
    assert recording_nwb.read_bytes() == before  # the recording itself is untouched
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        mod = nwb.processing["codec"]
        np.testing.assert_array_equal(mod["mode_loadings"].data[:], loadings)
        np.testing.assert_allclose(mod["mode_loadings"].get_timestamps(), ts, rtol=1e-12)
        np.testing.assert_array_equal(mod["predicted_rates"].data[:], rates)
        np.testing.assert_allclose(mod["predicted_rates"].get_timestamps(), ts, rtol=1e-12)
        assert mod["predicted_rates"].unit == "Hz" and "on0" in mod["predicted_rates"].description
        assert "stimulus_luminance" in nwb.acquisition  # the recording's content is kept


def test_irregular_bins_are_stored_as_timestamps(tmp_path, recording_nwb):
    ts = np.array([0.1, 0.2, 0.5, 0.6])
    out = export_modes_nwb(recording_nwb, tmp_path / "o.nwb", np.ones((4, 2)), ts, rates=np.ones((4, 3)))
    with NWBHDF5IO(str(out), "r") as io:
        mod = io.read().processing["codec"]
        np.testing.assert_array_equal(mod["mode_loadings"].timestamps[:], ts)
        np.testing.assert_array_equal(mod["predicted_rates"].get_timestamps(), ts)


def test_exported_codec_module_passes_nwbinspector_without_violations(tmp_path, recording_nwb):
    nwbinspector = pytest.importorskip("nwbinspector")
    out = export_modes_nwb(recording_nwb, tmp_path / "o.nwb", np.ones((5, 2)), np.arange(5) / 10.0,
                           rates=np.ones((5, 1)))
    def messages(path):
        return {(m.importance.name, m.check_function_name, m.object_name, m.location)
                for m in nwbinspector.inspect_nwbfile(nwbfile_path=str(path))}

    new = messages(out) - messages(recording_nwb)  # what the export added (the mock source lacks a subject)
    assert any(name == "codec" for _, _, name, _ in new)  # the module was inspected (a naming suggestion)
    assert [m for m in new if m[0] in ("CRITICAL", "PYNWB_VALIDATION", "BEST_PRACTICE_VIOLATION")] == []


def test_export_validates_shapes_and_never_overwrites_the_source(tmp_path, recording_nwb):
    with pytest.raises(ModesError, match=r"loadings: expected shape \(4, k\) to match the 4 timestamps"):
        export_modes_nwb(recording_nwb, tmp_path / "o.nwb", np.ones((5, 2)), np.arange(4) / 10.0)
    with pytest.raises(ModesError, match="strictly increasing"):
        export_modes_nwb(recording_nwb, tmp_path / "o.nwb", np.ones((3, 2)), np.array([0.0, 0.2, 0.1]))
    with pytest.raises(FileExistsError):
        export_modes_nwb(recording_nwb, recording_nwb, np.ones((3, 2)), np.arange(3) / 10.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.nwb"]


# ----------------------------------------------------------------------------------------- NWB
def test_nwb_loadings_of_the_test_window_bins_sit_at_those_bins_frame_start_times(tmp_path):
    from _nwbio_helpers import natural_recording
    from pynwb import NWBHDF5IO

    from retina_codec.modes.nwb_export import export_modes_nwb
    from retina_codec.recordings.nwb import read_nwb, write_nwb

    write_nwb(natural_recording(t=240), tmp_path / "rec.nwb")
    rec = read_nwb(tmp_path / "rec.nwb")
    bins = rec.window_bins("test", history=40, offset=1)
    assert bins.size > 5
    loadings = np.random.default_rng(0).random((bins.size, 2)).astype(np.float32)
    out = export_modes_nwb(tmp_path / "rec.nwb", tmp_path / "o.nwb", loadings, rec.frame_times[bins])
    edges = np.append(rec.frame_times, rec.frame_times[-1] + 1.0 / rec.frame_rate)
    with NWBHDF5IO(str(out), "r") as io:
        ts = io.read().processing["codec"]["mode_loadings"].get_timestamps()
    # each loading row starts its response bin [edges[t], edges[t + 1])
    np.testing.assert_allclose(ts, edges[bins], atol=1e-9)
    assert np.all(ts < edges[bins + 1])
