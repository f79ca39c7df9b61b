"""Datasets as splits: modality-agnostic containers and the image-folder reader."""

from adaptlab.data.splits import SplitDataset, stratified_split

__all__ = ["SplitDataset", "stratified_split"]
