"""The classifier statistics store (stores/classifier_stats.py): what write_classify_stats writes, its readers
read back (no model run: the results are built by hand)."""

from __future__ import annotations

import json
from types import SimpleNamespace as NS

import h5py
import numpy as np
import pytest
import torch

from retina_codec.classifiers import (
    ClassifyStats,
    read_classify_summary,
    read_layer_stats,
    write_classify_stats,
)
from retina_codec.classifiers.analysis import ModeMasks
from retina_codec.errors import FileFormatError
from retina_codec.stats import LayerVectors, statistics_table
from retina_codec.stores.classifier_stats import FORMAT, read_layer_records

N, LAYERS = 20, ["b1", "b2"]


class _Decomposer:
    def __init__(self, rng):
        self.atoms_ = rng.random((3, 8)).astype(np.float32)

    def metrics(self):
        return {"explained_variance": np.float32(0.5), "l0": 2.0}

    def settings(self):
        return {"kind": "codec", "k": 8, "sae": {"n_latents": 6}}


class _Images:
    source, class_names = "digits", ["0", "1", "2"]

    def __len__(self):
        return N


def _results(modes=True):
    rng = np.random.default_rng(0)
    vec = LayerVectors(LAYERS, {n: rng.random((N, 8)) for n in LAYERS}, {n: rng.random((N, 8)) for n in LAYERS},
                       rng.integers(0, 3, N), rng.integers(0, 3, N), rng.random(N), rng.random(N),
                       {n: {"total_rel": 0.1} for n in LAYERS},
                       {"method": "conductance", "rule": "trapezoid", "steps": 5, "target": {"name": "top1_logit"},
                        "reduction": ["ei_split", "spatial_sum"], "affine_stem": []})
    res = ClassifyStats(vec, statistics_table(vec), ["A", "B"], mode_layer="b2" if modes else None)
    res.seconds = {"statistics": 1.0}
    if modes:
        for src in ("contributions", "activations"):
            res.decomposers[src] = _Decomposer(rng)
            res.loadings[src] = rng.random((N, 3))
            res.top_modes[src] = (np.arange(3), np.array([0, 2, 1]), rng.random(3))
            for kind in ("preserve", "ablate"):
                for c in range(3):
                    res.sweeps.append(NS(source=src, kind=kind, cls=c, mode=c, sweep=NS(
                        fractions=np.array([0.1, 0.5]), target=rng.random(2), off_target=rng.random(2),
                        auc_target=0.3, auc_off=0.4, selectivity=0.1)))
            res.masks[src] = ModeMasks(np.arange(3), np.arange(3), rng.integers(0, N, (3, 2)),
                                       rng.random((3, 2, 4, 4)), [[1, 2], [0], [3]])
    return res


@pytest.mark.parametrize("modes", [True, False])
def test_the_classifier_stats_store_reads_back_what_was_written(tmp_path, modes):
    res = _results(modes)
    path = write_classify_stats(tmp_path / "stats.h5", res, torch.nn.Linear(2, 2), _Images(), model_spec="m")
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT and f.attrs["format_version"] == 1
        assert json.loads(f.attrs["layers"]) == LAYERS and json.loads(f.attrs["target"]) == {"name": "top1_logit"}
        assert f["layers/b1/contributions"].shape == (N, 8) and f["layers/b1/contributions"].dtype == np.float32
        assert ("modes" in f) == modes and ("masks" in f) == modes
        if modes:
            assert sorted(f["interventions/contributions"]) == ["ablate", "preserve"]
            assert f["interventions/activations/ablate/target"].shape == (3, 2)
            assert json.loads(f["masks/contributions"].attrs["channels"]) == [[1, 2], [0], [3]]
    stats, aliases, attrs = read_layer_stats(path)
    assert aliases == ["A", "B"] and attrs["layers"] == LAYERS and attrs["model"] == "m"
    for got, want in zip(stats, res.stats):
        assert got.layer == want.layer and got.n_channels == want.n_channels
        assert got.dim_contrib == pytest.approx(want.dim_contrib)
        np.testing.assert_allclose(got.hoyer_contrib, want.hoyer_contrib.astype(np.float32))
        assert got.summary().keys() == want.summary().keys()
    summary = read_classify_summary(path)
    assert summary["layer"] == LAYERS and summary["alias"] == ["A", "B"]
    np.testing.assert_allclose(summary["hoyer_contrib"], [s.summary()["hoyer_contrib"] for s in res.stats])
    records, _ = read_layer_records(path)
    assert [r["name"] for r in records] == LAYERS and records[1]["alias"] == "B"


def test_the_summary_reader_refuses_another_format(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(FileFormatError, match="expected 'retina-codec-classify-stats'"):
        read_classify_summary(tmp_path / "x.h5")
