"""What to predict: new inputs in a run's modality, each with the name its row carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptlab.errors import AdaptlabError

if TYPE_CHECKING:
    from adaptlab.data.splits import SplitDataset
    from adaptlab.run_loading import LoadedRun

# The label slot of a sample whose label is unknown: the dataset builders pass it through.
NO_LABEL = -1


@dataclass
class PredictionInputs:
    """Items to predict, in the form ``SplitDataset.samples`` holds them (``(item, label)``,
    label :data:`NO_LABEL` when unknown), so the run's own dataset builder reads them.

    ``names[i]`` is what the output calls item ``i`` (a file, ``file:series``); ``skipped``
    the inputs that could not be read, with the reason, as training lists them; ``details``
    what a task's writer needs beyond the items (the grid, each series' time stamps, the
    files the items came from)."""

    samples: list[tuple[Any, Any]]
    names: list[str]
    modality: str
    skipped: list[dict[str, str]] = field(default_factory=list)
    source: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    labels_known: bool = False  # a run's own split: the labels are the truth

    def __post_init__(self) -> None:
        if len(self.names) != len(self.samples):
            raise ValueError(f"{len(self.samples)} samples but {len(self.names)} names")


def sample_name(item: Any, fallback: str = "") -> str:
    """A split item's name: its path, or what the item says of itself (a series window); an
    array (a field in memory) says nothing of itself, so it takes ``fallback`` where given."""
    if isinstance(item, tuple) and item and isinstance(item[0], str | Path):
        item = item[0]  # (query, document) pairs: name the query
    if isinstance(item, Path):
        return str(item)
    describe = getattr(item, "describe", None)
    if callable(describe):
        return describe()
    name = getattr(item, "name", None)
    if isinstance(name, str) and name:
        return name
    if fallback and hasattr(item, "shape"):
        return fallback
    text = str(item)
    return text if len(text) <= 80 else text[:77] + "..."


def input_files(path: Path) -> list[Path]:
    """``path`` itself, or every file under the folder ``path`` in sorted order, hidden files
    and folders left out (class sub-folders are read like any folder: their names are not
    labels here)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(path).parts))


def split_inputs(data: SplitDataset, split: str) -> PredictionInputs:
    """A loaded dataset's split as inputs to predict, labels kept (the run's own test split:
    predictions recomputed into metrics must give the run's metrics)."""
    if split not in data.samples:
        raise AdaptlabError(f"no split {split!r}; the data has {sorted(data.samples)}")
    samples = list(data.samples[split])
    if not samples:
        raise AdaptlabError(f"the {split} split of {data.source or 'the data'} is empty")
    names = [sample_name(item, f"{split} sample {i}") for i, (item, _) in enumerate(samples)]
    return PredictionInputs(samples=samples, names=names,
                            modality=data.modality, source=f"{data.source} ({split} split)",
                            details={"coords": data.coords}, labels_known=True)


def read_inputs(run: LoadedRun, path: str | Path) -> PredictionInputs:
    """New inputs from ``path``, read by the run's domain as its ``--data`` reads training
    data; refused by name when the domain has no reader or the inputs do not fit the run."""
    from adaptlab.plugins.spec import resolve_reference

    path = Path(path)
    if not path.exists():
        raise AdaptlabError(f"--data {path} does not exist")
    reader = run.domain.predict_reader
    if not reader:
        raise AdaptlabError(f"domain {run.domain.name!r} cannot read new inputs to predict")
    inputs = resolve_reference(reader)(path, run)
    if inputs.modality != run.data.modality:
        raise AdaptlabError(f"{path}: read as {inputs.modality!r} inputs, but run "
                            f"{run.run_dir} was trained on {run.data.modality!r} inputs")
    if not inputs.samples:
        reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in inputs.skipped[:3])
        raise AdaptlabError(f"{path}: no readable inputs" + (f" ({reasons})" if reasons else ""))
    return inputs
