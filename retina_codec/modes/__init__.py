"""Contribution modes: sparse autoencoders (CODEC, TopK, BatchTopK, ReLU), metrics, summaries, interventions."""

from .base import SparseAutoencoder, TrainStep
from .codec_sae import CodecSAE
from .decomposer import KINDS, ModeDecomposer, make_sae
from .metrics import dead_fraction, explained_variance, firing_counts, mean_l0
from .relu_sae import ReLUSAE
from .synthetic import atom_recovery, planted_dictionary
from .topk_sae import BatchTopKSAE, TopKSAE
from .trainer import TrainConfig, TrainResult, train_sae

__all__ = [
    "ModeDecomposer", "KINDS", "make_sae",
    "SparseAutoencoder", "TrainStep", "CodecSAE", "TopKSAE", "BatchTopKSAE", "ReLUSAE",
    "TrainConfig", "TrainResult", "train_sae",
    "explained_variance", "mean_l0", "firing_counts", "dead_fraction",
    "planted_dictionary", "atom_recovery",
]
