"""A validated run being executed: model assembly, baseline, training, final artefacts."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from adaptlab.assembly import RunResult, build_backbone
from adaptlab.config import RunConfig
from adaptlab.costs.meter import CostMeter
from adaptlab.data.length_grouped import training_order
from adaptlab.data.splits import SPLITS, SplitDataset
from adaptlab.data.torch_datasets import make_torch_dataset
from adaptlab.engine import distributed
from adaptlab.engine.accelerator import check_device, make_accelerator
from adaptlab.engine.atomic import atomic_write_text
from adaptlab.engine.device_path import enable_gradient_checkpointing, loader_options, run_channels_last
from adaptlab.engine.events import EventBus, JsonlEventWriter, TerminalProgress
from adaptlab.engine.rng import capture_rng, restore_rng, seed_everything
from adaptlab.engine.sharding import check_shards
from adaptlab.engine.trackers import RunTrackers
from adaptlab.engine.train_state import TrainSettings
from adaptlab.engine.trainer import Trainer
from adaptlab.errors import AdaptlabError
from adaptlab.model_card import try_write_model_card
from adaptlab.plugins.spec import DomainSpec
from adaptlab.strategies.roundtrip import check_round_trip
from adaptlab.tasks.registry import make_task


def _origin() -> dict:
    """Where the run was started: Jupyter tells a notebook's kernel its notebook's path in
    ``JPY_SESSION_NAME`` (child processes inherit it), so the runs panel can reopen it."""
    return {"notebook": os.environ.get("JPY_SESSION_NAME") or None, "cwd": os.getcwd(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


class TrainingSession:
    def __init__(self, config: RunConfig, domain: DomainSpec, data: SplitDataset, backbone,
                 strategy, source_data: SplitDataset | None = None) -> None:
        self.config = config
        self.source_data = source_data
        self.domain = domain
        self.data = data
        self.backbone = backbone
        self.strategy = strategy
        self.task = make_task(data, config.class_weighting, backbone, config.forecast_loss)
        self.init_loaded: dict[str, int] = {}

    # -- checks that need the data and the backbone, before the run folder exists ----------
    def check(self) -> None:
        check_device(self.config.device, self.config.mixed_precision)
        model, layer_map = self.task.build_model(self.backbone, self.strategy.config)
        self.strategy.check(layer_map)
        self.strategy.check_model(model, layer_map)
        self.strategy.check_shared_options(model, layer_map)
        self._start_from_source(model, layer_map, dry_run=True)  # a misfit fails here
        if self.config.gradient_checkpointing:  # refused before the run folder is written
            enable_gradient_checkpointing(model, self.backbone.name)
        if self.config.fsdp:
            check_shards(type(self.strategy))
        if self.config.fsdp and self.config.torch_compile:
            raise AdaptlabError("fsdp=true and torch_compile=true cannot be used together: "
                                "the sharded model is not compiled; set one of them to false")

    def _build_model(self):
        model, layer_map = self.task.build_model(self.backbone, self.strategy.config)
        self._start_from_source(model, layer_map)
        return model, layer_map

    def _start_from_source(self, model, layer_map, dry_run: bool = False) -> None:
        """``init_from``: the source run's trained weights replace the pre-trained ones."""
        if not self.config.init_from:
            return
        from adaptlab.transfer.init_weights import check_same_grid, load_source_weights

        check_same_grid(self.config.init_from, self.data.coords)
        self.init_loaded = load_source_weights(model, layer_map, self.config.init_from,
                                               self.data.class_names or None, dry_run)

    def _rebuild_base_model(self):
        """A fresh task model and its layer map from the original weights, as a reload
        builds it (the round-trip check)."""
        fresh = build_backbone(self.config, self.domain, self.data)
        model, layer_map = self.task.build_model(fresh, self.strategy.config)
        self._start_from_source(model, layer_map)
        return model, layer_map

    def _loaders(self, device_type: str) -> dict[str, DataLoader]:
        options = {"image_size": self.config.image_size, "seed": self.config.seed}
        common = {"batch_size": self.config.batch_size, "num_workers": self.config.num_workers,
                  **loader_options(device_type)}
        train = make_torch_dataset(self.data, "train", self.backbone, True, options)
        order = training_order(train, self.config.batch_size, self.config.seed,
                               self.config.group_by_length)
        loaders = {"train": DataLoader(train, collate_fn=getattr(train, "collate", None),
                                       **order, **common)}
        for split in SPLITS:
            dataset = make_torch_dataset(self.data, split, self.backbone, False, options)
            loaders[f"eval_{split}"] = DataLoader(dataset, shuffle=False, **common,
                                                  collate_fn=getattr(dataset, "collate", None))
        return loaders

    # -- the run ---------------------------------------------------------------------------
    def execute(self, run_dir: Path, resume: bool, subscribers: Iterable[Callable],
                progress: bool, on_trainer: Callable | None = None):
        # One writer: with several processes, the main one writes the run folder, events
        # included, and the others train, evaluate and wait for it (engine.distributed).
        main = distributed.is_main()
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
        if main:
            # A resumed run killed before origin.json and data.json were written gets them
            # (--resume needs config.json, so only a new run writes that one).
            for name, text in (("config.json", lambda: self.config.to_json()),
                               ("origin.json", lambda: json.dumps(_origin(), indent=2)),
                               ("data.json", lambda: json.dumps(self.data.description(),
                                                                indent=1))):
                if not resume or not (run_dir / name).is_file():
                    atomic_write_text(run_dir / name, text() + "\n")
        bus = EventBus()
        self.trackers = RunTrackers(self.config, run_dir)  # started with the Accelerator
        writer = JsonlEventWriter(run_dir / "events.jsonl") if main else None
        for subscriber in ([writer] + ([TerminalProgress()] if progress else [])
                           + list(subscribers)) if main else []:
            bus.subscribe(subscriber)
        try:
            return self._train_and_report(run_dir, resume, bus, on_trainer)
        finally:
            if writer is not None:
                writer.close()
            self.trackers.end()

    def _make_trainer(self, run_dir: Path, bus: EventBus):
        accelerator = make_accelerator(self.config.device, self.config.mixed_precision,
                                       self.config.grad_accum, self.config.torch_compile,
                                       tracking=self.trackers.accelerator_options())
        self.trackers.start(accelerator, bus)
        seed_everything(self.config.seed, deterministic=accelerator.device.type == "cpu")
        model, layer_map = self._build_model()
        loaders = self._loaders(accelerator.device.type)
        baseline = self._baseline(run_dir, model, loaders, accelerator.device, bus)
        model = self.strategy.setup(model, layer_map)
        if self.config.gradient_checkpointing:
            bus.emit("gradient_checkpointing",
                     mechanism=enable_gradient_checkpointing(model, self.backbone.name))
        channels_last = run_channels_last(model, self.config, accelerator.device,
                                          accelerator.mixed_precision)
        self._init_head(model, layer_map, loaders["eval_train"], accelerator.device, bus)
        self._init_from_data(model, layer_map, loaders["eval_train"], accelerator.device, bus)
        cfg = self.config
        settings = TrainSettings(epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 warmup_ratio=cfg.warmup_ratio, schedule=cfg.schedule,
                                 early_stopping_patience=cfg.early_stopping_patience,
                                 average_top_k=cfg.average_top_k)
        trainer = Trainer(model=model, strategy=self.strategy,
                          task=self.task,
                          settings=settings, train_loader=loaders["train"],
                          eval_loaders={s: loaders[f"eval_{s}"] for s in SPLITS},
                          run_dir=run_dir, bus=bus, accelerator=accelerator,
                          meter=CostMeter(device=str(accelerator.device)),
                          channels_last=channels_last, shard=self.config.fsdp,
                          shard_every_block=self.config.gradient_checkpointing)
        return trainer, loaders, baseline

    def _train_and_report(self, run_dir: Path, resume: bool, bus: EventBus,
                          on_trainer: Callable | None):
        trainer, loaders, baseline = self._make_trainer(run_dir, bus)
        meter = trainer.meter
        if on_trainer:
            on_trainer(trainer)
        if resume and not trainer.resume():
            # Killed before its first checkpoint: nothing trained is lost, so the run starts
            # over from the same seed, which gives what an uninterrupted run gives.
            bus.emit("resume", epoch=0, step_in_epoch=0, processes=trainer.processes,
                     saved_processes=None, checkpoint=None)
        if trainer.accelerator.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        bus.emit("train_start", epochs=self.config.epochs, strategy=self.strategy.name,
                 trainable_params=meter.trainable_params, total_params=meter.total_params)
        state = trainer.fit()
        meter.record_cuda_peak()
        if state.interrupted:
            bus.emit("run_interrupted", epoch=state.epoch, step=state.step_in_epoch)
            return RunResult(run_dir, {}, meter.to_dict())
        final = {split: trainer.evaluate(split) for split in SPLITS}
        metrics = self._metrics(final, baseline, state)
        # Sharded, the main process writes the final files from the model gathered whole.
        model = trainer.unsharded(self._rebuild_base_model)
        if not distributed.is_main():
            trainer.accelerator.wait_for_everyone()  # for the main process's final files
            return RunResult(run_dir, metrics, {}, headline=self.task.headline(metrics))
        artefacts = self.strategy.save_final(model, run_dir)
        artefacts["reload_max_abs_diff"] = check_round_trip(
            model, self.strategy, run_dir, self._rebuild_base_model,
            next(iter(loaders["eval_test"]))[0], trainer.accelerator.autocast,
            trainer.accelerator.mixed_precision != "no", trainer.channels_last)
        costs = {**meter.to_dict(), **artefacts, "processes": trainer.processes,
                 "environment": _environment()}
        atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        atomic_write_text(run_dir / "costs.json", json.dumps(costs, indent=2) + "\n")
        try_write_model_card(run_dir)  # reads the metrics and costs just written
        bus.emit("run_end", test=final["test"], baseline_test=metrics["baseline"]["test"])
        trainer.accelerator.wait_for_everyone()
        return RunResult(run_dir, metrics, costs, headline=self.task.headline(metrics))

    def _init_head(self, model, layer_map, loader, device, bus) -> None:
        """``head_init=prototypes`` (a head taken from the source run keeps its weights; a
        resumed run's checkpoint replaces what this sets)."""
        if getattr(self.strategy.config, "head_init", "random") != "prototypes" \
                or self.init_loaded.get("head"):
            return
        model.to(device)
        done = self.task.init_head(model, layer_map, loader, device)
        model.to("cpu")
        if done:
            bus.emit("head_init", **done)

    def _init_from_data(self, model, layer_map, loader, device, bus) -> None:
        """The strategy's start from the training data (``Strategy.init_from_data``). The
        random state is kept as it was (iterating a loader draws a seed), so the run trains
        on the same batch order whatever its strategy's start."""
        with torch.random.fork_rng(devices=[]):
            done = self.strategy.init_from_data(model, layer_map, loader, self.task.loss, device)
        if done:
            bus.emit("strategy_init", **done)

    def _source_loader(self) -> DataLoader | None:
        if self.source_data is None:
            return None
        everything = [item for split in SPLITS for item in self.source_data.samples[split]]
        merged = SplitDataset(self.source_data.class_names, {"all": everything},
                              modality=self.source_data.modality)
        dataset = make_torch_dataset(merged, "all", self.backbone, False,
                                     {"image_size": self.config.image_size})
        return DataLoader(dataset, batch_size=self.config.batch_size,
                          collate_fn=getattr(dataset, "collate", None))

    def _baseline(self, run_dir: Path, model, loaders, device, bus) -> dict:
        """Baselines of the unadapted model, computed once (a resumed run reads them)."""
        path = run_dir / "baseline.json"
        if path.is_file():
            return json.loads(path.read_text())
        # Random state untouched (iterating a loader draws a seed): a run resumed after a
        # kill reads this file instead, and must then train exactly as this run does.
        rng = capture_rng()
        result = self.task.baselines(model, {s: loaders[f"eval_{s}"] for s in SPLITS},
                                     self._source_loader(), device)
        restore_rng(rng)
        if distributed.is_main():
            atomic_write_text(path, json.dumps(result, indent=2) + "\n")
        bus.emit("baseline", **{name: {k: v for k, v in metrics["test"].items()
                                       if isinstance(v, float)}
                                for name, metrics in result.items()})
        return result

    def _metrics(self, final: dict, baselines: dict, state) -> dict[str, Any]:
        first = next(iter(baselines))
        return {
            "task": self.data.task,
            "monitor": self.task.monitor,
            "higher_is_better": self.task.higher_is_better,
            "class_names": self.data.class_names,
            "final": final,
            "baseline": baselines[first],
            "baseline_method": BASELINE_METHODS.get(first, first),
            "reference": {name: value for name, value in baselines.items() if name != first},
            "history": state.history,
            "best_epoch": state.best_epoch,
            "epochs_run": state.epoch,
            "stopped_early": state.stopped_early,
            "init_from": ({"run": self.config.init_from, "tensors": self.init_loaded}
                          if self.config.init_from else None),
            "split_sizes": self.data.counts(),
            "skipped_inputs": {"count": len(self.data.skipped), "files": self.data.skipped},
            "data_notes": self.data.notes,
            **({"grid": self.data.coords} if self.data.coords else {}),
        }


BASELINE_METHODS = {
    "zeroshot_ncm": "zero-shot: nearest-class-mean on frozen pre-trained features, prototypes "
                    "from the source dataset",
    "fewshot_ncm": "few-shot: nearest-class-mean on frozen pre-trained features, prototypes "
                   "from the training split",
    "zeroshot_encoder": "zero-shot: the pre-trained encoder's embeddings, no training",
    "persistence": "persistence: the last input field as the prediction, no training",
    "climatology": "climatology: the training targets' mean as the prediction, no training",
}


def _environment() -> dict[str, Any]:
    # Read from the installed metadata: importing peft only for its version cost every run that
    # trains without it about 3 s.
    from importlib.metadata import version

    return {"python": platform.python_version(), "torch": torch.__version__,
            "timm": version("timm"), "peft": version("peft"),
            "accelerate": version("accelerate"), "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
