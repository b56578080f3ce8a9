"""Retina models (BN-CNN, linear-stacked BN-CNN, LN), the model contract, any module via :func:`wrap`,
checkpoint I/O, torch-deep-retina import, fitting.

Layers are addressed by stable names (``model.layer_names``; :func:`get_module`), never by index.
Fitting and evaluation (:func:`fit`, :func:`evaluate`, :func:`predict`) live in
:mod:`retina_codec.models.fitting`.
"""

from __future__ import annotations

from .base import InputSpec, RetinaModel, get_module
from .bncnn import BNCNN
from .checkpoint import load_model, read_metadata, save_model
from .contract import RetinaModelLike, check_retina_model
from .fitting import FitResult, evaluate, fit, predict
from .layers import GaussianNoise, UnitBatchNorm
from .linear_stacked import LinearStackedBNCNN, LinearStackedConv2d
from .ln import LNModel
from .registry import ARCHITECTURES, SHIPPED_MODELS, build_model, resolve_model_path, shipped_model_path
from .tdr_import import import_tdr_checkpoint
from .wrapped import WrappedModel, wrap

__all__ = [
    "InputSpec", "RetinaModel", "RetinaModelLike", "check_retina_model", "WrappedModel", "wrap", "get_module", "BNCNN", "LinearStackedBNCNN", "LinearStackedConv2d",
    "LNModel", "GaussianNoise", "UnitBatchNorm", "ARCHITECTURES", "build_model", "SHIPPED_MODELS", "shipped_model_path", "resolve_model_path", "save_model",
    "load_model", "read_metadata", "import_tdr_checkpoint", "fit", "evaluate", "predict", "FitResult",
]

