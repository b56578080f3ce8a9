"""Contribution modes: sparse autoencoders (CODEC, TopK, BatchTopK, ReLU), metrics, summaries, interventions."""

from ..stores.contributions import LayerContributions, read_layer_contributions
from ..stores.modes import ModesFile, read_loadings, read_modes
from .base import SparseAutoencoder, TrainStep
from .codec_sae import CodecSAE
from .decomposer import KINDS, ModeDecomposer, make_sae
from .interventions import ablate_mode, intervention_sweep, preserve_mode
from .metrics import dead_fraction, explained_variance, firing_counts, mean_l0
from .relu_sae import ReLUSAE
from .store import load_decomposer, write_modes
from .summaries import activation_modes, class_correlations, cluster_cells, loading_correlations
from .synthetic import atom_recovery, planted_dictionary
from .topk_sae import BatchTopKSAE, TopKSAE
from .trainer import TrainConfig, TrainResult, train_sae

__all__ = [
    "LayerContributions", "read_layer_contributions",
    "ModeDecomposer", "KINDS", "make_sae",
    "SparseAutoencoder", "TrainStep", "CodecSAE", "TopKSAE", "BatchTopKSAE", "ReLUSAE",
    "TrainConfig", "TrainResult", "train_sae",
    "explained_variance", "mean_l0", "firing_counts", "dead_fraction",
    "planted_dictionary", "atom_recovery",
    "write_modes", "read_modes", "read_loadings", "load_decomposer", "ModesFile",
    "loading_correlations", "class_correlations", "cluster_cells", "activation_modes",
    "ablate_mode", "preserve_mode", "intervention_sweep",
]
