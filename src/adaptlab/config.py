"""RunConfig: the one description of a run that the CLI, the widgets and Python calls share."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.engine.trackers import parse_trackers
from adaptlab.errors import AdaptlabError, did_you_mean
from adaptlab.schema import from_dict

_IDENTITY_FIELDS = {"domain", "dataset", "data", "backbone", "strategy", "strategy_options", "out"}


# Fields that say how a run executes, not what it learns: a sweep or transfer curve resumed
# with other values is the same experiment, and a cached source run stays valid.
EXECUTION_FIELDS = ("device", "num_workers", "trackers", "channels_last",
                    "gradient_checkpointing", "torch_compile", "fsdp")

# Fields added after runs were recorded, with the value a run recorded without one trained
# with: read back (a resume, a reload, a replay), it does what it did, not today's default.
FIELDS_BEFORE = {"group_by_length": False}


@dataclass
class RunConfig:
    """Everything needed to replay a run; serialises to ``config.json``.

    >>> cfg = RunConfig(domain="wildlife", epochs=3)
    >>> RunConfig.from_json(cfg.to_json()) == cfg
    True
    """

    domain: str
    dataset: str | None = None
    data: str | None = None
    backbone: str | None = None
    backbone_weights: str | None = field(
        default=None, metadata={"help": "local weights file (safetensors or .pth) for the backbone"})
    init_from: str | None = field(
        default=None, metadata={"help": "a finished run folder whose trained weights start this "
                                        "run (transfer from a source run)"})
    strategy: str | None = None
    strategy_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = field(default=5, metadata={"min": 1, "max": 10_000, "help": "training epochs"})
    batch_size: int = field(default=16, metadata={"min": 1, "max": 65_536})
    lr: float | None = field(default=None, metadata={
        "min": 1e-9, "max": 10.0,
        "help": "peak learning rate (unset = the strategy's default; the run records it)"})
    weight_decay: float = field(default=0.01, metadata={"min": 0.0, "max": 1.0})
    warmup_ratio: float = field(default=0.1, metadata={"min": 0.0, "max": 0.9,
                                                       "help": "fraction of steps warming up"})
    schedule: str = field(default="cosine", metadata={"choices": ("cosine", "linear", "constant")})
    grad_accum: int = field(default=1, metadata={"min": 1, "max": 1024})
    early_stopping_patience: int = field(default=0, metadata={
        "min": 0, "max": 10_000, "help": "epochs without val improvement before stopping; 0 = off"})
    average_top_k: int = field(default=1, metadata={
        "min": 1, "max": 100,
        "help": "end on the average of the k best validation epochs' weights (AutoGluon "
                "averages 3), kept only if validation says it is no worse than the best "
                "epoch; 1 = the best epoch"})
    class_weighting: str = field(default="balanced", metadata={"choices": ("balanced", "none")})
    horizon: int | None = field(default=None, metadata={
        "min": 1, "max": 100_000, "help": "forecasting: steps ahead to predict (unset = the "
                                          "dataset's default)"})
    max_gap: int | None = field(default=None, metadata={
        "min": 0, "max": 100_000, "help": "series: the longest run of missing values the gap "
                                          "rule fills by interpolation (unset = 3)"})
    season: int | None = field(default=None, metadata={
        "min": 1, "max": 100_000, "help": "series: steps in one seasonal cycle, for seasonal "
                                          "naive and MASE (unset = from the spacing)"})
    forecast_loss: str = field(default="quantile", metadata={
        "choices": ("quantile", "point"),
        "help": "forecasting: pinball loss over every quantile, or absolute error of the median"})
    train_samples: int | None = field(default=None, metadata={
        "min": 1, "max": 10**9, "help": "use only this many training samples (seeded pick; "
                                        "few-shot runs and quick checks)"})
    image_size: int | None = field(default=None, metadata={
        "min": 32, "max": 1024, "help": "override the backbone's input size (smaller = faster)"})
    seed: int = field(default=0, metadata={"min": 0, "max": 2**32 - 1})
    group_by_length: bool = field(default=True, metadata={
        "help": "text: training batches of similar token length, in a seeded order that "
                "changes every epoch (less padding; retrieval pairs are never grouped)"})
    trackers: list[str] | None = field(default_factory=list, metadata={
        "help": "experiment trackers fed through Accelerate, comma-separated: tensorboard, "
                "mlflow (both write under the run folder's trackers/), wandb; empty = none"})
    device: str = field(default="auto", metadata={"choices": ("auto", "cpu", "cuda", "mps")})
    mixed_precision: str = field(default="auto", metadata={"choices": ("auto", "no", "bf16", "fp16")})
    num_workers: int = field(default=0, metadata={"min": 0, "max": 64})
    channels_last: bool = field(default=True, metadata={
        "help": "convolutional models and their images in channels-last layout, on CUDA "
                "(faster convolutions with tensor cores) and on the CPU in float32 (oneDNN)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute the backbone's block activations in backward instead of keeping "
                "them (less memory, about a third more compute)"})
    torch_compile: bool = field(default=False, metadata={
        "help": "compile the model with torch.compile (inductor); pays off on long GPU runs"})
    fsdp: bool = field(default=False, metadata={
        "help": "several processes: shard the weights, gradients and optimizer state over "
                "them (torch FSDP) instead of a whole copy in each; for backbones whose "
                "training does not fit one device"})
    out: str = "runs/latest"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.from_recorded(json.loads(text))

    @classmethod
    def from_recorded(cls, values: dict) -> RunConfig:
        """A recorded config (``config.json``, an export's ``run_config``); a field it lacks
        was added after it was recorded and takes the value the run trained with
        (``FIELDS_BEFORE``), else today's default."""
        return cls(**{**FIELDS_BEFORE, **values})

    @classmethod
    def from_file(cls, path: Path) -> RunConfig:
        try:
            config = cls.from_json(path.read_text())
        except (OSError, ValueError, TypeError) as exc:
            raise AdaptlabError(f"{path}: cannot read a run config ({exc})") from exc
        if not config.strategy:
            return config
        from adaptlab.strategies.registry import recorded_strategy_options

        return dataclasses.replace(config, strategy_options=recorded_strategy_options(
            config.strategy, config.strategy_options))

    def with_resolved_options(self) -> RunConfig:
        """A copy whose ``strategy_options`` lists every option of its strategy, defaults
        included (:func:`adaptlab.strategies.registry.resolved_strategy_options`); unchanged
        while no strategy is chosen."""
        if not self.strategy:
            return self
        from adaptlab.strategies.registry import resolved_strategy_options

        return dataclasses.replace(self, strategy_options=resolved_strategy_options(
            self.strategy, self.strategy_options))

    def with_overrides(self, assignments: list[str], strategy_keys: set[str]) -> RunConfig:
        """Apply ``--set KEY=VALUE`` items: a training field, or an option of the strategy."""
        training: dict[str, Any] = {}
        strategy = dict(self.strategy_options)
        training_fields = {f.name for f in dataclasses.fields(self)} - _IDENTITY_FIELDS
        for item in assignments:
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise AdaptlabError(f"--set {item!r}: expected KEY=VALUE")
            bare = key.removeprefix("strategy.")
            if key in training_fields:
                training[key] = value
            elif bare in strategy_keys:
                strategy[bare] = value
            else:
                raise AdaptlabError(
                    f"--set {key}: unknown key; "
                    f"{did_you_mean(bare, training_fields | set(strategy_keys))}not a training "
                    f"setting nor an option of strategy {self.strategy!r}")
        return dataclasses.replace(self.validated(training), strategy_options=strategy)

    def validated(self, changes: dict[str, Any] | None = None) -> RunConfig:
        """A copy with ``changes`` applied and every training field range-checked."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in _IDENTITY_FIELDS}
        values.update(changes or {})
        checked = dataclasses.asdict(from_dict(_TrainingFields, values, owner="run config"))
        checked["trackers"] = parse_trackers(checked["trackers"])  # each known name once
        return dataclasses.replace(self, **checked)


# The training half of RunConfig, so schema.from_dict can check it without the identity fields.
_TrainingFields = dataclasses.make_dataclass(
    "_TrainingFields",
    [(f.name, f.type, f) for f in dataclasses.fields(RunConfig) if f.name not in _IDENTITY_FIELDS],
)
