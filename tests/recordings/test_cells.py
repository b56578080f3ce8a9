"""The one cell-selection rule (recordings.cells): an id match wins, else an integer or digit string is an
index; every place that selects cells (Recording.select_cells, rf.sta.select_cells / spike_triggered_average,
the CLI's --cells) resolves the same way."""

from __future__ import annotations

import numpy as np
import pytest

from retina_codec.errors import RetinaCodecError, UnknownCellError
from retina_codec.recordings import Recording, cell_index, resolve_cells
from retina_codec.rf import spike_triggered_average
from retina_codec.rf.sta import select_cells

IDS = ["10", "3", "7", "0", "a"]  # lab / ROI ids that look like numbers, and one that does not


def _recording(ids=IDS, t=120, seed=0):
    rng = np.random.default_rng(seed)
    stim = rng.random((t, 4, 5), dtype=np.float32)
    resp = rng.poisson(1.0, (t, len(ids)))
    return Recording(stim, np.arange(t) / 100.0, 100.0, resp, cell_ids=list(ids),
                     intervals={"train": [[0, 1.0]], "validation": [[1.0, 1.1]], "test": [[1.1, 1.2]]})


@pytest.mark.parametrize("cell, expected", [
    ("3", 1),      # an id match wins over the index 3
    ("0", 3),      # the id "0" is the 4th cell, not the first
    ("a", 4),      # a non-numeric id
    ("4", 4),      # no cell has the id "4": the digit string is an index
    (2, 2),        # an int is an index
    (np.int64(1), 1),
])
def test_the_rule_an_id_match_wins_else_an_integer_or_digit_string_is_an_index(cell, expected):
    assert cell_index(cell, IDS) == expected
    assert resolve_cells([cell], IDS) == [expected]


@pytest.mark.parametrize("cell", ["zz", "5", 5, -1, "-1"])
def test_an_unknown_cell_is_an_unknown_cell_error_listing_the_ids_and_the_range(cell):
    assert cell_index(cell, IDS) is None
    with pytest.raises(UnknownCellError) as err:
        resolve_cells([cell], IDS, what="--cells")
    msg = str(err.value)
    assert isinstance(err.value, RetinaCodecError) and isinstance(err.value, ValueError)
    assert msg.startswith("--cells: ") and "neither a cell id nor an index in [0, 5)" in msg and "'10'" in msg


def test_negative_indices_count_from_the_end_only_where_allowed():
    assert cell_index(-1, IDS, allow_negative=True) == 4
    assert resolve_cells(["-2"], IDS, allow_negative=True) == [3]


@pytest.mark.parametrize("cells", [["3"], ["0", "10"], ["4"], ["a", "1"], ["7", "0", "4"]])
def test_cli_style_and_api_style_selection_agree_for_ids_that_look_like_numbers(cells):
    rec = _recording()
    cli = resolve_cells(cells, rec.cell_ids, what="--cells")  # the CLI hands over the strings it was given
    assert select_cells(rec, cells).tolist() == cli  # spike_triggered_average(cells=...) and the other rf functions
    sub = rec.select_cells(cells)
    assert sub.cell_ids == [rec.cell_ids[i] for i in cli]
    np.testing.assert_array_equal(sub.responses, rec.responses[:, cli])


def test_integers_are_indices_everywhere():
    rec = _recording()
    assert select_cells(rec, [3, 0]).tolist() == resolve_cells([3, 0], rec.cell_ids) == [3, 0]
    assert rec.select_cells([3, 0]).cell_ids == ["0", "10"]


def test_rf_cells_3_and_spike_triggered_average_cells_3_pick_the_same_cell():
    rec = _recording()
    by_cli = resolve_cells(["3"], rec.cell_ids, what="--cells")  # what `retina-codec rf --cells 3` resolves
    sta = spike_triggered_average(rec, history=3, cells=["3"], quiet=True)
    assert sta.cell_ids == ["3"] and by_cli == [1]
    ref = spike_triggered_average(rec, history=3, cells=by_cli, quiet=True)
    np.testing.assert_array_equal(sta.sta, ref.sta)


def test_spike_triggered_average_rejects_an_unknown_cell_with_the_one_error():
    with pytest.raises(UnknownCellError, match="neither a cell id nor an index"):
        spike_triggered_average(_recording(), history=3, cells=["nope"], quiet=True)
    with pytest.raises(UnknownCellError):
        _recording().select_cells([9])
