"""Property tests of spike binning: counts are conserved, per-unit totals match, and the writer's
deterministic spike placement bins back to the same counts."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from retina_codec.recordings import Recording, bin_spikes, frame_edges
from retina_codec.recordings.nwb import _spike_times

finite_times = st.floats(min_value=-5.0, max_value=15.0, allow_nan=False, allow_infinity=False)


@st.composite
def spikes_and_edges(draw):
    """Per-unit spike lists (some empty) and increasing bin edges (irregular widths)."""
    n_units = draw(st.integers(1, 6))
    units = [draw(st.lists(finite_times, max_size=40)) for _ in range(n_units)]
    start = draw(st.floats(-2.0, 5.0, allow_nan=False))
    widths = draw(st.lists(st.floats(0.01, 1.0, allow_nan=False), min_size=1, max_size=30))
    edges = start + np.concatenate([[0.0], np.cumsum(widths)])
    return units, edges


def _flatten(units):
    times = np.concatenate([np.asarray(u, np.float64) for u in units]) if units else np.zeros(0)
    index = np.cumsum([len(u) for u in units])
    return times, index


@settings(max_examples=150, deadline=None)
@given(spikes_and_edges())
def test_every_spike_is_counted_once_or_reported_outside(data):
    units, edges = data
    times, index = _flatten(units)
    counts, n_outside = bin_spikes(times, index, edges)
    assert counts.shape == (len(edges) - 1, len(units))
    assert counts.sum() + n_outside == len(times)
    assert np.all(counts >= 0)


@settings(max_examples=150, deadline=None)
@given(spikes_and_edges())
def test_per_unit_totals_and_bins_match_a_brute_force_count(data):
    units, edges = data
    times, index = _flatten(units)
    counts, _ = bin_spikes(times, index, edges)
    for i, u in enumerate(units):
        u = np.asarray(u, np.float64)
        inside = u[(u >= edges[0]) & (u < edges[-1])]
        assert counts[:, i].sum() == len(inside)
        brute = [np.sum((u >= a) & (u < b)) for a, b in zip(edges[:-1], edges[1:])]
        np.testing.assert_array_equal(counts[:, i], brute)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 40).flatmap(lambda t: st.tuples(
        st.just(t),
        st.lists(st.lists(st.integers(0, 9), min_size=t, max_size=t), min_size=1, max_size=4),
        st.floats(-100.0, 100.0, allow_nan=False),
        st.sampled_from([7.5, 60.0, 100.0, 1000.0]),
    ))
)
def test_writer_spike_placement_bins_back_to_the_same_counts(args):
    t, per_unit, start, rate = args
    counts = np.asarray(per_unit, np.float32).T  # (T, N)
    rec = Recording(np.zeros((t, 1, 1), np.float32), start + np.arange(t) / rate, rate, counts)
    spikes = _spike_times(rec)
    times = np.concatenate(spikes)
    index = np.cumsum([len(s) for s in spikes])
    back, n_outside = bin_spikes(times, index, frame_edges(rec.frame_times, rate))
    assert n_outside == 0
    np.testing.assert_array_equal(back, counts)
    for s in spikes:
        assert np.all(np.diff(s) > 0)  # strictly increasing within a unit
