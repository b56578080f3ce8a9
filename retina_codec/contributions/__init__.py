"""CODEC contributions: conductance and friends of hidden units to a target, batched along the path.

``contributions(model, inputs, layers, target=..., method="conductance", steps=20)`` returns per-layer
arrays; :func:`write_contributions` streams them to an HDF5 store (resumable, shardable with torchrun).
Both build a :class:`ContributionSpec` (what is computed) and :class:`RunOptions` (how it runs) and run the
one loop of :mod:`.runner` into a memory or an HDF5 sink; the store's layout and readers are
:mod:`retina_codec.stores.contributions`.
"""

from ..hashing import model_hash
from ..stores.contributions import LayerContributions, read_contributions, read_layer_contributions
from .api import ContributionResult, completeness_summary, contributions, fit_reference
from .engine import ChunkResult, ContributionEngine
from .methods import ActGrad, ActNormGrad, Conductance, LayerIntegratedGradients, Method, make_method
from .reductions import reduce_map, reduced_shape
from .runner import MemorySink, run
from .spec import ContributionSpec, RunOptions
from .store import HDF5Sink, write_contributions
from .targets import (
    CallableTarget,
    CellsTarget,
    CellTarget,
    ContrastiveTarget,
    DescribedTarget,
    SoftmaxProbTarget,
    SumTarget,
    SurprisalTarget,
    Target,
    TopLogitTarget,
    make_target,
)

__all__ = [
    "contributions", "write_contributions", "read_contributions", "read_layer_contributions", "LayerContributions",
    "model_hash", "ContributionResult", "completeness_summary", "fit_reference",
    "ContributionSpec", "RunOptions", "run", "MemorySink", "HDF5Sink",
    "ContributionEngine", "ChunkResult",
    "Method", "Conductance", "LayerIntegratedGradients", "ActGrad", "ActNormGrad", "make_method",
    "Target", "CellTarget", "CellsTarget", "SumTarget", "SurprisalTarget", "TopLogitTarget",
    "SoftmaxProbTarget", "ContrastiveTarget", "CallableTarget", "DescribedTarget", "make_target",
    "reduce_map", "reduced_shape",
]
