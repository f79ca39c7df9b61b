"""Per-point labels: every point of every input cloud labelled, written back beside a summary
table (one row per cloud: its points and the fraction of them in each part class).

The model reads a fixed number of points per cloud (the backbone's ``num_points``), so a cloud
is read in covering views: first the subset the run's evaluation reads, then the remaining
points in random disjoint groups of ``num_points``, the last group topped up with points
already labelled (their second prediction is dropped). Each view goes through the run's own
dataset builder (centred, scaled, aligned as in training, which also showed the model random
subsets of that density), and each point takes the label of the first view that holds it.
This labels every point by the model itself, where propagating a sampled neighbour's label
would blur part boundaries; and since the first view is the evaluation's, predictions on a
run's own split at those points are the evaluation's, so its metrics recompute from them.

Where the inputs came from files, the domain's reader names a function that writes a file
in its input's format with the labels added (``details["write_labels"]``: ``(source,
labels, target_stem) -> written path``); clouds held only in memory (a run's own split) are
written as NPZ with ``points``, ``labels``, ``evaluated`` (the points the run's evaluation
reads) and, when the truth is known, ``truth``.
"""

from __future__ import annotations

import re
import shutil
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from adaptlab.data.points import Cloud
from adaptlab.data.splits import SplitDataset
from adaptlab.data.torch_datasets import make_torch_dataset
from adaptlab.predict.inputs import NO_LABEL
from adaptlab.predict.writer import CsvTable, Predictions, PredictionWriter, number
from adaptlab.tasks.base import move_to

if TYPE_CHECKING:
    from adaptlab.predict.inputs import PredictionInputs
    from adaptlab.run_loading import LoadedRun


def _read_views(run: LoadedRun, clouds: list[Cloud]) -> list[tuple[torch.Tensor, np.ndarray]]:
    """Each cloud as the run's evaluation reads it: (points [num_points, 3], which stored
    point each row is). The point labels carry the stored indices through the run's own
    dataset builder, which returns the labels of the points it picked."""
    tracked = [(Cloud(cloud.points, cloud.name, np.arange(len(cloud.points)), cloud.up_axis),
                NO_LABEL) for cloud in clouds]
    described = SplitDataset(list(run.data.class_names), {"views": tracked},
                             modality="point-segments", task="segmentation")
    dataset = make_torch_dataset(described, "views", run.backbone, False)
    return [(points, chosen.numpy()) for points, chosen in (dataset[i] for i in range(len(dataset)))]


def evaluated_points(run: LoadedRun, cloud: Cloud) -> np.ndarray:
    """The indices of the points of ``cloud`` that the run's evaluation reads, in the order
    the model sees them."""
    return _read_views(run, [cloud])[0][1]


def covering_views(run: LoadedRun, cloud: Cloud) -> list[tuple[torch.Tensor, np.ndarray]]:
    """Views that together hold every point of ``cloud``: the evaluation's own first, then
    the rest in groups of ``num_points`` (drawn from a seed of the cloud's name, so a cloud
    is labelled the same way every time)."""
    first = _read_views(run, [cloud])[0]
    size = len(first[1])
    rest = np.setdiff1d(np.arange(len(cloud.points)), first[1])
    if not len(rest):
        return [first]
    rng = np.random.default_rng(zlib.crc32(cloud.name.encode()))
    rest = rng.permutation(rest)
    short = -len(rest) % size
    if short:  # top the last group up with points already labelled by the first view
        rest = np.concatenate([rest, rng.choice(first[1], short, replace=False)])
    groups = [Cloud(cloud.points[group], f"{cloud.name} view {i + 1}", up_axis=cloud.up_axis)
              for i, group in enumerate(rest.reshape(-1, size))]
    # A group of exactly num_points points is read whole, in its order: the indices it gives
    # back are positions in the group.
    views = _read_views(run, groups)
    return [first, *((points, group[order]) for (points, order), group
                     in zip(views, rest.reshape(-1, size), strict=True))]


class PointLabelWriter(PredictionWriter):
    """``path, points, labels_file, fraction_<class>...``, one row per cloud, and the labelled
    clouds in ``<out stem>_labels/`` beside the table (replaced as a whole on success; it is
    what ``Predictions.files`` names)."""

    def __init__(self, run, inputs: PredictionInputs, out: Path, options: dict | None = None
                 ) -> None:
        super().__init__(run, inputs, out, options)
        self.class_names = list(run.data.class_names)
        self.folder = out.with_name(f"{out.stem}_labels")
        self._partial = out.with_name(f".{out.stem}_labels.partial")
        shutil.rmtree(self._partial, ignore_errors=True)
        self._partial.mkdir(parents=True)
        self.table = CsvTable(out, ["path", "points", "labels_file",
                                    *(f"fraction_{name}" for name in self.class_names)])
        self._npz_names: set[str] = set()

    @torch.inference_mode()
    def add(self, outputs: torch.Tensor, indices: list[int], batch: Any) -> None:
        first = outputs.argmax(dim=-1).cpu().numpy()
        rows = []
        for row, index in enumerate(indices):
            cloud = self.inputs.samples[index][0]
            views = covering_views(self.run, cloud)
            labels = self._label_every_point(cloud, views, first[row], len(indices))
            written = self._write(index, cloud, labels, evaluated=views[0][1])
            fractions = np.bincount(labels, minlength=len(self.class_names)) / len(labels)
            rows.append([self.inputs.names[index], len(labels), str(written),
                         *map(number, fractions.tolist())])
        self.table.add(rows)

    def _label_every_point(self, cloud: Cloud, views: list, first: np.ndarray, batch_size: int
                           ) -> np.ndarray:
        """``first``: the model's labels for the first view (the evaluation's), which the
        runner read; the other views are read here, ``batch_size`` at a time."""
        labels = np.full(len(cloud.points), -1, dtype=np.int64)
        labels[views[0][1]] = first
        device = next(self.run.model.parameters()).device
        for start in range(1, len(views), max(batch_size, 1)):
            chunk = views[start:start + max(batch_size, 1)]
            points = move_to(torch.stack([points for points, _ in chunk]), device)
            predicted = self.run.model(points).argmax(dim=-1).cpu().numpy()
            for (_, where), labelled in zip(chunk, predicted, strict=True):
                new = labels[where] < 0  # a top-up point keeps its first label
                labels[where[new]] = labelled[new]
        return labels

    def _write(self, index: int, cloud: Cloud, labels: np.ndarray, evaluated: np.ndarray) -> Path:
        files, write = self.inputs.details.get("files"), self.inputs.details.get("write_labels")
        if files and write:
            source = Path(files[index])
            root = Path(self.inputs.details.get("root") or source.parent)
            stem = self._partial / source.relative_to(root).with_suffix("")
            stem.parent.mkdir(parents=True, exist_ok=True)
            written = Path(write(source, labels, stem))
        else:
            written = self._partial / self._npz_name(self.inputs.names[index])
            arrays = {"points": cloud.points, "labels": labels,
                      "evaluated": np.isin(np.arange(len(labels)), evaluated)}
            if self.inputs.labels_known and cloud.point_labels is not None:
                arrays["truth"] = cloud.point_labels
            np.savez(written, **arrays)
        return self.folder / written.relative_to(self._partial)

    def _npz_name(self, name: str) -> str:
        """A file name from a cloud's name, unique in the folder."""
        base = re.sub(r"[^\w.-]+", "_", Path(name).name if "/" in name else name).strip("_")
        candidate, n = f"{base or 'cloud'}.npz", 1
        while candidate in self._npz_names:
            n += 1
            candidate = f"{base or 'cloud'}_{n}.npz"
        self._npz_names.add(candidate)
        return candidate

    def finish(self) -> Predictions:
        table = self.table.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        self._partial.rename(self.folder)
        # The folder, not each file: the table names every cloud's file, and a folder of
        # 100,000 clouds should not print 100,000 lines.
        return Predictions(table, files=[self.folder], count=self.table.rows)

    def abandon(self) -> None:
        self.table.abandon()
        shutil.rmtree(self._partial, ignore_errors=True)
