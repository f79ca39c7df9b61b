"""New photos to predict: one image, or every image under a folder (class sub-folders or
none; their names are ignored)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from adaptlab.data.image_folder import IMAGE_SUFFIXES
from adaptlab.predict.inputs import NO_LABEL, PredictionInputs, input_files

if TYPE_CHECKING:
    from adaptlab.run_loading import LoadedRun


def read_image_inputs(path: Path, run: LoadedRun) -> PredictionInputs:
    """Images are listed, not decoded, here: a folder of 100,000 photos starts at once, and
    one that does not decode is skipped and listed when its batch is read."""
    samples, names, skipped = [], [], []
    for file in input_files(path):
        if file.suffix.lower() in IMAGE_SUFFIXES:
            samples.append((file, NO_LABEL))
            names.append(str(file))
        else:
            skipped.append({"file": str(file),
                            "reason": f"not an image file (suffix {file.suffix or 'none'!r})"})
    return PredictionInputs(samples=samples, names=names, modality="image", skipped=skipped,
                            source=str(path))
