"""Layer statistics for the classifier comparison (docs/definitions.md#classifier-statistics): Hoyer sparsity, class-mean
dimensionality and participation ratio, E/I correlation — for contributions and for activations."""

from .layers import (
    STAT_KEYS,
    LayerStats,
    LayerVectors,
    layer_activations,
    layer_statistics,
    layer_vectors,
    sparsity_verdict,
    statistics_table,
)
from .measures import (
    class_mean_dimensionality,
    class_means,
    ei_correlation,
    hoyer_sparsity,
    n_components,
    net_channels,
    participation_ratio,
    pca_spectrum,
    split_halves,
)

__all__ = [
    "hoyer_sparsity", "class_means", "pca_spectrum", "n_components", "participation_ratio",
    "class_mean_dimensionality", "ei_correlation", "split_halves", "net_channels",
    "LayerVectors", "LayerStats", "layer_vectors", "layer_activations", "layer_statistics", "statistics_table",
    "sparsity_verdict", "STAT_KEYS",
]
