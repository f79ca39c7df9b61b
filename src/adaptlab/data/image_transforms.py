"""Train and eval transforms built from a backbone's preprocessing."""

from __future__ import annotations

from torchvision import transforms as T

from adaptlab.backbones.backbone import Preprocessing

_INTERPOLATION = {"bilinear": T.InterpolationMode.BILINEAR,
                  "bicubic": T.InterpolationMode.BICUBIC,
                  "nearest": T.InterpolationMode.NEAREST}


def image_transforms(pre: Preprocessing, train: bool, size: int | None = None):
    """Random-resized-crop and flip for training; resize and centre-crop for evaluation."""
    size = size or pre.input_size[-1]
    interpolation = _INTERPOLATION.get(pre.interpolation, T.InterpolationMode.BILINEAR)
    normalise = [T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    if train:
        return T.Compose([T.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=interpolation),
                          T.RandomHorizontalFlip(), *normalise])
    resize = int(round(size / pre.crop_pct))
    return T.Compose([T.Resize(resize, interpolation=interpolation), T.CenterCrop(size),
                      *normalise])
