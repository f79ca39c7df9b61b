"""Predict: new inputs through the run's preprocessing and its adapted model, in batches.

Items are read by a DataLoader (optionally in worker processes) and written as batches come
(a writer may gather a bounded chunk of rows first), so memory stays bounded whatever the
number of inputs. An item that fails to load (a
file that does not decode) is skipped and listed, as training skips unreadable files.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from adaptlab.data.splits import SplitDataset
from adaptlab.data.torch_datasets import make_torch_dataset
from adaptlab.errors import AdaptlabError
from adaptlab.predict.inputs import PredictionInputs, read_inputs, split_inputs
from adaptlab.predict.writer import Predictions
from adaptlab.tasks.base import move_to

if TYPE_CHECKING:
    from adaptlab.run_loading import LoadedRun

DEFAULT_BATCH_SIZE = 64


class _Guarded(Dataset):
    """Each item with its index, or the reason it could not be read."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return index, self.dataset[index], None
        except (AdaptlabError, OSError, ValueError) as exc:
            return index, None, f"{type(exc).__name__}: {exc}"


class _CollateReadable:
    """The readable items collated as the run's dataset collates them, the rest set aside."""

    def __init__(self, collate) -> None:
        self.collate = collate

    def __call__(self, batch):
        indices, items, reasons = zip(*batch, strict=True)
        if not any(reasons):  # the usual batch: one pass, no per-item filtering
            return list(indices), self.collate(list(items))[0], []
        readable = [(index, item) for index, item, reason in batch if reason is None]
        failed = [(index, reason) for index, _, reason in batch if reason is not None]
        inputs = self.collate([item for _, item in readable])[0] if readable else None
        return [index for index, _ in readable], inputs, failed


def resolve_inputs(run: LoadedRun, data: Any, split: str | None) -> tuple[PredictionInputs, str]:
    """The inputs and a name for their outputs (the data's file stem or the split)."""
    if isinstance(data, PredictionInputs):
        return data, "predictions"
    if split is not None:
        if data is not None:
            raise AdaptlabError("give the data to predict or a split of the run's data, not both")
        if not any(run.data.samples.values()):
            raise AdaptlabError(f"run {run.run_dir} was loaded without its data; load it with "
                                "with_data=True to predict one of its splits")
        return split_inputs(run.data, split), split
    if data is None:
        raise AdaptlabError("nothing to predict: give a file or folder (or a split of the run)")
    return read_inputs(run, data), Path(data).stem or "predictions"


def predict(run: LoadedRun, data: Any = None, *, split: str | None = None,
            out: str | Path | None = None, batch_size: int | None = None,
            progress: bool = False, num_workers: int = 0,
            options: dict[str, Any] | None = None) -> Predictions:
    """See :meth:`adaptlab.run_loading.LoadedRun.predict`."""
    from adaptlab.plugins.spec import resolve_reference
    from adaptlab.tasks.registry import get_task_class

    inputs, stem = resolve_inputs(run, data, split)
    writer_class = resolve_reference(get_task_class(run.data.task).prediction_writer)
    out = Path(out) if out else run.run_dir / "predictions" / f"{stem}{writer_class.suffix}"
    if out.is_dir():
        out = out / f"{stem}{writer_class.suffix}"
    described = SplitDataset(run.data.class_names, {"predict": inputs.samples},
                             modality=inputs.modality, task=run.data.task,
                             coords=inputs.details.get("coords") or run.data.coords)
    dataset = make_torch_dataset(described, "predict", run.backbone, False,
                                 {"image_size": run.config.image_size})
    loader = DataLoader(_Guarded(dataset), batch_size=batch_size or DEFAULT_BATCH_SIZE,
                        num_workers=num_workers,
                        collate_fn=_CollateReadable(getattr(dataset, "collate", default_collate)))
    writer = writer_class(run, inputs, out, options)
    skipped = list(inputs.skipped)
    try:
        _stream(run, loader, writer, skipped, len(dataset), progress)
    except BaseException:
        writer.abandon()
        raise
    result = writer.finish()
    result.skipped = skipped
    result.inputs = inputs
    if skipped:
        result.files.append(_write_skipped(out, skipped))
    return result


@contextmanager
def _without_parameter_grads(model: torch.nn.Module) -> Iterator[None]:
    """The model's parameters not requiring grad while it predicts, as they were after.

    Inference mode alone is not enough: a parameter that requires grad still steers some
    operations onto their autograd-ready kernels (matmul's and rms_norm's among them, which
    then skip the fused path), which costs fracast's forecaster 5-10 % a forward on CPU."""
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)


@torch.inference_mode()
def _stream(run: LoadedRun, loader, writer, skipped: list, total: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    device = next(run.model.parameters()).device
    run.model.eval()
    with _without_parameter_grads(run.model), \
            tqdm(total=total, unit="input", desc="predict", disable=not progress) as bar:
        for indices, inputs, failed in loader:
            skipped += [{"file": writer.inputs.names[index], "reason": reason}
                        for index, reason in failed]
            if indices:
                writer.add(writer.model_outputs(run.model, move_to(inputs, device)), indices,
                           inputs)
            bar.update(len(indices) + len(failed))


def _write_skipped(out: Path, skipped: list[dict[str, str]]) -> Path:
    path = out.with_name(f"{out.stem}.skipped.csv")
    with path.open("w", newline="", encoding="utf-8") as file:
        table = csv.DictWriter(file, fieldnames=["file", "reason"])
        table.writeheader()
        table.writerows(skipped)
    return path
