"""Bad input: one specific error naming the file and field (the case table is in _bad_input_cases.py)."""

from __future__ import annotations

import pytest
from _bad_input_cases import CASES, _movie, _nwb

from retina_codec.recordings import read_nwb


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_one_specific_error_naming_file_and_field(case, tmp_path):
    c = CASES[case]
    path = c.make(tmp_path)
    with pytest.raises(c.error) as err:
        c.read(path)
    msg = str(err.value)
    assert str(path) in msg and c.field in msg and "\n" not in msg

def test_spikes_outside_every_stimulus_are_counted_and_warned(tmp_path):
    path = _nwb(tmp_path, [_movie()], units=[[0.1, 0.2, 7.0], [-1.0, 0.3]])
    with pytest.warns(RuntimeWarning, match="2 of 5 spikes fall outside every stimulus series"):
        rec = read_nwb(path)
    with rec:
        assert rec.responses.sum() == 3
