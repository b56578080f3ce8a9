"""Image inputs for classifiers: an image folder (``ImageFolder`` layout) or the bundled digits, as tensors.

``ImageFolder`` layout: ``root/<class name>/<image>.png|jpg|...``; classes are the sorted sub-folder
names. Images are resized (shorter side to ``size·256/224``, then centre-cropped to ``size``; the digits
CNN's grey images are resized straight to ``size``) and normalised with the model's ``preprocess`` mean /
std, so that the contribution baseline 0 is the mean image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import FileFormatError

__all__ = ["ImageSet", "load_image_folder", "digits_image_set", "load_images"]


@dataclass
class ImageSet:
    """Images ``x (n, C, H, W)`` float32 (normalised), labels ``y (n,)`` int64, ``class_names``, source."""

    x: torch.Tensor
    y: torch.Tensor
    class_names: list[str]
    source: str
    paths: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _per_class(y: np.ndarray, max_per_class: int | None, seed: int) -> np.ndarray:
    """Indices keeping at most ``max_per_class`` samples of each class (seeded, sorted)."""
    if max_per_class is None:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(y == c))[:max_per_class] for c in np.unique(y)]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def load_image_folder(root: str | os.PathLike, model: nn.Module, max_per_class: int | None = None,
                      seed: int = 0) -> ImageSet:
    """All images under ``root`` (ImageFolder layout) preprocessed for ``model`` (``model.preprocess``)."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.is_dir():
        raise FileFormatError(f"{root}: expected a folder of class sub-folders with images (ImageFolder layout)")
    pre = getattr(model, "preprocess", None) or {"size": 224, "mean": [0.485, 0.456, 0.406],
                                                  "std": [0.229, 0.224, 0.225], "channels": 3}
    size = int(pre["size"])
    steps: list = [transforms.Grayscale(1)] if int(pre.get("channels", 3)) == 1 else [transforms.Lambda(
        lambda im: im.convert("RGB"))]
    if int(pre.get("channels", 3)) == 1:
        steps.append(transforms.Resize((size, size), antialias=True))
    else:
        steps += [transforms.Resize(int(round(size * 256 / 224)), antialias=True), transforms.CenterCrop(size)]
    steps += [transforms.ToTensor(), transforms.Normalize(pre["mean"], pre["std"])]
    try:
        ds = ImageFolder(str(root), transform=transforms.Compose(steps))
    except (FileNotFoundError, RuntimeError) as err:
        raise FileFormatError(f"{root}: {err}") from err
    y_all = np.asarray(ds.targets, dtype=np.int64)
    idx = _per_class(y_all, max_per_class, seed)
    xs = []
    for i in idx:
        try:
            xs.append(ds[int(i)][0])
        except OSError as err:
            raise FileFormatError(f"{ds.samples[int(i)][0]}: cannot read image ({err})") from err
    if not xs:
        raise FileFormatError(f"{root}: no images found")
    return ImageSet(torch.stack(xs), torch.from_numpy(y_all[idx]), list(ds.classes), str(root),
                    [ds.samples[int(i)][0] for i in idx])


def digits_image_set(model: nn.Module | None = None, split: str = "test", max_per_class: int | None = None,
                     seed: int = 0) -> ImageSet:
    """The digits' ``split`` ("train" / "test") normalised with ``model.norm_stats`` (else the train split's)."""
    from .digits import load_digits_data

    ns = getattr(model, "norm_stats", None)
    size = int(getattr(model, "size", 16))
    split_seed = int(((getattr(model, "metadata", None) or {}).get("data") or {}).get("split_seed", 0))
    d = load_digits_data(size=size, seed=split_seed, norm=tuple(ns) if ns else None)
    if split not in ("train", "test"):
        raise FileFormatError(f"digits split: expected 'train' or 'test', found {split!r}")
    x, y = (d.x_test, d.y_test) if split == "test" else (d.x_train, d.y_train)
    idx = torch.from_numpy(_per_class(y.numpy(), max_per_class, seed))
    return ImageSet(x[idx], y[idx], [str(i) for i in range(10)], f"sklearn digits ({split} split)")


def load_images(spec: str | os.PathLike, model: nn.Module, max_per_class: int | None = None,
                seed: int = 0) -> ImageSet:
    """``"digits"`` / ``"digits:train"`` (the bundled digits) or an ImageFolder directory."""
    text = str(spec)
    if text in ("digits", "digits:test", "digits:train"):
        return digits_image_set(model, text.partition(":")[2] or "test", max_per_class, seed)
    return load_image_folder(text, model, max_per_class, seed)
