"""CODEC contributions: conductance and friends of hidden units to a target, batched along the path.

``contributions(model, inputs, layers, target=..., method="conductance", steps=20)`` returns per-layer
arrays; :func:`write_contributions` streams them to an HDF5 store (resumable, shardable with torchrun).
"""

from .api import ContributionResult, completeness_summary, contributions, fit_reference
from .engine import ChunkResult, ContributionEngine
from .methods import ActGrad, ActNormGrad, Conductance, LayerIntegratedGradients, Method, make_method
from .reductions import reduce_map, reduced_shape
from .store import model_hash, read_contributions, write_contributions
from .targets import (
    CallableTarget,
    CellsTarget,
    CellTarget,
    ContrastiveTarget,
    SoftmaxProbTarget,
    SumTarget,
    SurprisalTarget,
    Target,
    TopLogitTarget,
    make_target,
)

__all__ = [
    "contributions", "write_contributions", "read_contributions", "model_hash", "ContributionResult", "completeness_summary", "fit_reference",
    "ContributionEngine", "ChunkResult",
    "Method", "Conductance", "LayerIntegratedGradients", "ActGrad", "ActNormGrad", "make_method",
    "Target", "CellTarget", "CellsTarget", "SumTarget", "SurprisalTarget", "TopLogitTarget",
    "SoftmaxProbTarget", "ContrastiveTarget", "CallableTarget", "make_target",
    "reduce_map", "reduced_shape",
]
