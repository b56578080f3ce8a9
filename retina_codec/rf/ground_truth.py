"""Scoring RF estimates against a simulation's ground truth: the true linear filters of its LN cells."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .decompose import peak_box

__all__ = ["SUPPORT_LEVEL", "score_ln_truth"]

#: a pixel-frame is on a true filter's support when ``|F| >= SUPPORT_LEVEL · max |F|``
SUPPORT_LEVEL = 0.1


def score_ln_truth(ln_cells: Sequence[int], ln_filters: np.ndarray, cell_ids: Sequence[str], *,
                   sta: np.ndarray | None = None, model_sta: np.ndarray | None = None) -> dict[str, Any]:
    """Pearson r of the STA and of the model STA with the true filters of the LN cells, on each filter's
    support.

    ``ln_filters (L, h_true, H, W)`` are the true filters of cells ``ln_cells`` (indices into the estimates'
    cells, ids ``cell_ids`` of every cell); ``sta`` / ``model_sta`` are ``(C, h, H, W)`` (either may be
    ``None``: its r's are NaN). The filters are cut to the estimates' window, their last ``h`` frames.
    Returns the ``ln_truth`` group of the RF store: ``cells``, ``cell_ids``, ``filters (L, h, H, W)``,
    ``r_sta (L,)``, ``r_model_sta (L,)``, ``peak_box (L, 4)`` (row start/stop, column start/stop of
    :func:`~retina_codec.rf.decompose.peak_box`) and ``description``.
    """
    h = model_sta.shape[1] if model_sta is not None else sta.shape[1]
    ln = np.asarray(ln_cells, dtype=np.int64)
    true = np.asarray(ln_filters)[:, -h:]  # the model's window: the last h frames
    r_sta, r_model = [], []
    for j, c in enumerate(ln):
        support = np.abs(true[j]) >= SUPPORT_LEVEL * np.abs(true[j]).max()
        for est, out in ((sta, r_sta), (model_sta, r_model)):
            out.append(float("nan") if est is None else
                       float(np.corrcoef(np.nan_to_num(est[c][support]), true[j][support])[0, 1]))
    box = [peak_box(true[j]) for j in range(len(ln))]
    return {
        "cells": ln, "cell_ids": [cell_ids[c] for c in ln], "filters": true,
        "r_sta": np.array(r_sta), "r_model_sta": np.array(r_model),
        "peak_box": np.array([[b[0].start, b[0].stop, b[1].start, b[1].stop] for b in box]),
        "description": "true LN filters (last h frames of the window), and Pearson r of the STA and "
                       "the model STA with them on the filter's support (|F| >= 10% of its peak)",
    }
