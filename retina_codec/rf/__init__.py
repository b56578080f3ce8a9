"""Receptive fields: STA/STC, model STA, instantaneous RFs, mode-conditioned RFs, dynamic-RF sources."""

from ..stores.rf import read_rf, write_rf
from .conditioned import ConditionedRFAccumulator, ConditionedRFs, active_combinations, mode_conditioned_rfs
from .correlate import WindowCorrelator
from .decompose import SpaceTimeComponents, batched_rank1, denoise_rank1, peak_box, space_time_svd
from .gaussian_fit import GaussianFit, fit_gaussian, fit_gaussians, gaussian_2d
from .irf import input_jacobian, instantaneous_rfs, iter_irfs
from .model_sta import model_reverse_correlation, model_sta_gradient
from .sources import DynamicRFSources, SourcesAccumulator
from .sta import (
    SpikeTriggeredAverage,
    SpikeTriggeredCovariance,
    spike_triggered_average,
    spike_triggered_covariance,
)

__all__ = [
    "WindowCorrelator", "SpikeTriggeredAverage", "SpikeTriggeredCovariance", "spike_triggered_average",
    "spike_triggered_covariance", "model_sta_gradient", "model_reverse_correlation", "input_jacobian",
    "iter_irfs", "instantaneous_rfs", "SpaceTimeComponents", "space_time_svd", "batched_rank1", "peak_box",
    "denoise_rank1", "GaussianFit", "fit_gaussian", "fit_gaussians", "gaussian_2d", "ConditionedRFs",
    "ConditionedRFAccumulator", "active_combinations", "mode_conditioned_rfs", "DynamicRFSources",
    "SourcesAccumulator", "write_rf", "read_rf",
]
