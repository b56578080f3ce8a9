"""Your own model on the command line: ``--model my_model.py:build`` runs your function and uses what it returns.

The file is yours (like a script you run): it is imported from its path, ``build()`` is called with no
arguments and must return a retina model meeting the contract (:mod:`.contract`), typically
``retina_codec.models.wrap(your_module, history=..., frame_shape=..., layers=...)`` after loading your own
weights. Nothing is unpickled here; the function decides what it loads.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, ModelContractError
from .contract import check_retina_model

__all__ = ["is_factory_spec", "load_factory_model"]

_SPEC = re.compile(r"^(?P<file>.+\.py)(?::(?P<func>[A-Za-z_]\w*))?$")


def is_factory_spec(path: str | os.PathLike) -> bool:
    """True for ``FILE.py`` or ``FILE.py:FUNCTION``."""
    return bool(_SPEC.match(str(path)))


def load_factory_model(spec: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    """The model returned by ``FUNCTION()`` (default ``build``) of the Python file in ``spec``
    (``"my_model.py:build"``), checked against the model contract, in eval mode on ``device``."""
    m = _SPEC.match(str(spec))
    if m is None:
        raise CheckpointError(f"{spec}: expected FILE.py or FILE.py:FUNCTION")
    path, func = Path(m["file"]), m["func"] or "build"
    if not path.is_file():
        raise CheckpointError(f"{path}: no such Python file")
    name = f"retina_codec_user_model_{abs(hash(str(path.resolve())))}"
    loader = importlib.util.spec_from_file_location(name, path)
    if loader is None or loader.loader is None:
        raise CheckpointError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(loader)
    sys.modules[name] = module  # dataclasses and pickling inside the file look their module up here
    try:
        loader.loader.exec_module(module)
    except Exception as err:
        sys.modules.pop(name, None)
        raise CheckpointError(f"{path}: importing it failed: {type(err).__name__}: {err}") from err
    build = getattr(module, func, None)
    if not callable(build):
        raise CheckpointError(f"{path}: has no function {func!r} (expected {path}:{func} to name a function "
                              "returning the model)")
    try:
        model = build()
    except Exception as err:
        raise CheckpointError(f"{path}:{func}(): {type(err).__name__}: {err}") from err
    if isinstance(model, nn.Module) and getattr(model, "input_spec", None) is None:
        raise ModelContractError(f"{path}:{func}() returned a plain {type(model).__name__}: return "
                                 "retina_codec.models.wrap(module, history=..., frame_shape=(H, W), layers=[...]) "
                                 "instead")
    check_retina_model(model, f"{path}:{func}()")
    return model.to(device).eval()
