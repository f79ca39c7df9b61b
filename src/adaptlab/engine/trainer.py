"""The training loop: ours, on Accelerate.

Accelerate handles devices, mixed precision, gradient accumulation and multiple processes; the
loop itself stays ours because strategies need hooks inside the step (dynamic freezing looks at
gradients and acts before the optimizer step) and the cost meter needs to wrap individual steps.
Hooks: :mod:`adaptlab.engine.callbacks`; the optimizer: :mod:`adaptlab.engine.optimizer`.
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from adaptlab.costs.meter import CostMeter, SavedActivationCounter
from adaptlab.engine import distributed, sharding
from adaptlab.engine.atomic import atomic_write_with
from adaptlab.engine.callbacks import HookContext
from adaptlab.engine.checkpoint import load_latest_checkpoint, save_checkpoint
from adaptlab.engine.device_path import channels_last_inputs
from adaptlab.engine.events import EventBus
from adaptlab.engine.micro_batches import MicroBatches, split_batch
from adaptlab.engine.optimizer import OptimizerControl
from adaptlab.engine.rng import capture_rng, restore_rng
from adaptlab.engine.train_state import TrainSettings, TrainState
from adaptlab.errors import AdaptlabError


class Trainer:
    """Fit a prepared model; emits events on ``bus``; checkpoints into ``run_dir``.

    ``model`` has had ``strategy.setup`` applied: the optimizer is built from the strategy's
    declared groups, checkpoints hold its declared tensors and its tensor state."""

    def __init__(self, *, model, strategy, task, settings: TrainSettings, train_loader,
                 eval_loaders: dict, run_dir: Path, bus: EventBus, accelerator,
                 meter: CostMeter, channels_last: bool = False, shard: bool = False,
                 shard_every_block: bool = False) -> None:
        self.accelerator = accelerator
        self.strategy = strategy
        self.task = task
        self.settings = settings
        self.bus = bus
        self.meter = meter
        self.run_dir = run_dir
        self.checkpoint_dir = run_dir / "checkpoints"
        self.state = TrainState()
        self.callbacks = list(strategy.callbacks())
        self._stop_requested = False
        self._epoch_train: dict[str, float] = {}  # the last finished epoch's training metrics
        self._measured_signature: tuple[bool, ...] | None = None  # trainable set last counted
        self._step_signature: tuple[bool, ...] | None = None  # trainable set at the last step
        self.micro = MicroBatches()  # pieces per batch, more after running out of memory
        self.channels_last = channels_last  # images in the model's memory layout
        # Validation metrics and a fingerprint of the weights they were measured on: the
        # final evaluation reuses them when the run ends on those very weights (the best
        # epoch is the last, no average kept), instead of a second pass over the split.
        self._val_measured: tuple[tuple[float, float], dict] | None = None

        self.processes = accelerator.num_processes
        # fsdp: weights, gradients and optimizer state in slices over the processes (one
        # process has nothing to share them with and trains as usual).
        self.sharded = shard and self.processes > 1
        # A strategy whose trainable set changes cannot sit inside DDP (see
        # ``distributed.average_gradients``): its model is placed, not wrapped. Sharded, FSDP
        # averages whatever gradients the step has.
        self._manual_sync = (self.processes > 1 and strategy.changes_trainable_set
                             and not self.sharded)
        if shard:
            bus.emit("fsdp", processes=self.processes, units=sharding.shard_model(
                model, accelerator.device, every_block=shard_every_block)
                if self.sharded else 0)
        self._plain_eval = dict(eval_loaders)
        prepared = accelerator.prepare(train_loader, *eval_loaders.values())
        if not eval_loaders:  # prepare hands one object back bare, not in a tuple
            prepared = (prepared,)
        self.train_loader = prepared[0]
        self.eval_loaders = dict(zip(eval_loaders, prepared[1:], strict=True))
        accum = accelerator.gradient_accumulation_steps
        # The prepared loader: the global batches of this epoch (batch_size is global).
        self.steps_per_epoch = -(-len(self.train_loader) // accum)
        total = self.steps_per_epoch * settings.epochs
        self.optim = OptimizerControl(model, strategy.param_groups(model, settings.weight_decay),
                                      settings.lr, settings.schedule, total,
                                      int(settings.warmup_ratio * total))
        self.scheduler = self.optim.scheduler
        if self._manual_sync or self.sharded:
            self.model = model.to(accelerator.device)
            self.optimizer = accelerator.prepare(self.optim.optimizer)
        else:
            self.model, self.optimizer = accelerator.prepare(model, self.optim.optimizer)
        self.optim.stepper = self.optimizer
        # Unwrapped once (every step's hook context reads it; unwrapping costs 0.3 ms), and
        # compiled, to the module itself: strategies save and restore by the model's names,
        # not the compiled wrapper's ``_orig_mod.`` ones, which Accelerate keeps by default.
        self._unwrapped = accelerator.unwrap_model(self.model, keep_torch_compile=False)
        meter.measure_model(self._unwrapped)

    @property
    def unwrapped(self):
        return self._unwrapped

    def request_stop(self) -> None:
        """Stop after the current step and leave a resumable checkpoint (safe from any thread:
        it only sets a flag the loop reads)."""
        self._stop_requested = True

    def remeasure_costs(self) -> None:
        """Count saved activations again on the next step (the trainable set changed)."""
        self._measured_signature = None

    def _context(self, epoch: int | None = None, step: int = 0) -> HookContext:
        """A hook's view; outside an epoch, ``epoch`` is the last one finished."""
        return HookContext(self, self.unwrapped, self.optim,
                           self.state.epoch if epoch is None else epoch, step,
                           self.state.global_step)

    def _hook(self, name: str, ctx: HookContext) -> None:
        for callback in self.callbacks:
            getattr(callback, name)(ctx)

    # -- resume ---------------------------------------------------------------------------
    def resume(self) -> bool:
        loaded = load_latest_checkpoint(self.checkpoint_dir, on_damaged=self._checkpoint_damaged)
        if loaded is None:
            return False
        state = loaded.state
        if "optimizer_layout" not in state:
            raise AdaptlabError(f"checkpoint in {self.checkpoint_dir} was written by an earlier "
                                "adaptlab version and cannot be resumed; start a new run")
        self.strategy.load_state_dict(state["strategy"])
        self.strategy.load_tensor_state(loaded.strategy)
        self.strategy.load_saved(self.unwrapped, loaded.model)
        self.optim.restore(loaded.optimizer, state["optimizer_layout"], sharded=self.sharded)
        if self.accelerator.scaler is not None and state.get("scaler"):
            self.accelerator.scaler.load_state_dict(state["scaler"])
        saved_processes = state.get("processes", 1)
        by_process = state.get("rng_by_process") or [state["rng"]]
        # Each process continues its own random stream; with another process count they all
        # take the main process's (the data order does not depend on it: see distributed).
        restore_rng(by_process[self.accelerator.process_index]
                    if len(by_process) == self.processes else state["rng"])
        self.meter.load_state(state.get("costs", {}))
        self.state = TrainState(**{**state["train"], "interrupted": False})
        if not self.accelerator.is_main_process:  # the saved sums are over all processes
            self.state.epoch_sums, self.state.epoch_samples = {}, 0
        self.bus.emit("resume", epoch=self.state.epoch, step_in_epoch=self.state.step_in_epoch,
                      processes=self.processes, saved_processes=saved_processes,
                      checkpoint=loaded.folder.name)
        return True

    def _checkpoint_damaged(self, path: Path, message: str) -> None:
        if self.accelerator.is_main_process:
            print(f"adaptlab: warning: {message}; resuming from the checkpoint before it",
                  file=sys.stderr, flush=True)
        self.bus.emit("checkpoint_damaged", path=str(path), message=message)

    def _global_epoch_sums(self) -> tuple[dict[str, float], int]:
        """The unfinished epoch's training sums over all processes."""
        names = sorted(self.state.epoch_sums)
        totals = distributed.sum_over_processes(
            [self.state.epoch_sums[n] for n in names] + [float(self.state.epoch_samples)])
        return dict(zip(names, totals[:-1], strict=True)), int(totals[-1])

    def _saved(self) -> dict[str, torch.Tensor]:
        """The strategy's declared tensors, whole (every process must call: it gathers)."""
        tensors = self.strategy.saved_tensors(self.unwrapped)
        return sharding.full(tensors) if self.sharded else tensors

    def unsharded(self, build):
        """The trained model whole in the main process, in host memory (None in the others):
        the strategy applied to ``build()``'s fresh model, given the gathered tensors; the
        model itself when it is not sharded. Every process must call."""
        if not self.sharded:
            return self.unwrapped
        tensors = self._saved()
        if not self.accelerator.is_main_process:
            return None
        base, layer_map = build()
        whole = self.strategy.apply(base, layer_map)
        self.strategy.load_saved(whole, tensors)
        return whole

    def _save_checkpoint(self) -> None:
        rng = distributed.gather_objects(capture_rng())
        train = asdict(self.state)
        if self.processes > 1:
            train["epoch_sums"], train["epoch_samples"] = self._global_epoch_sums()
        state = {"train": train, "optimizer_layout": self.optim.layout(),
                 "strategy": self.strategy.state_dict(), "rng": rng[0],
                 "rng_by_process": rng, "processes": self.processes,
                 "costs": self.meter.state(),
                 "scaler": self.accelerator.scaler.state_dict()
                 if self.accelerator.scaler is not None else None}
        tensors, optimizer = self._saved(), self.optim.optimizer.state_dict()
        if self.sharded:
            optimizer = sharding.full_optimizer_state(optimizer)
        if self.accelerator.is_main_process:
            path = save_checkpoint(self.checkpoint_dir, self.state.epoch + (
                1 if self.state.step_in_epoch else 0), tensors, optimizer, state,
                self.strategy.tensor_state())
            self.bus.emit("checkpoint", epoch=self.state.epoch, path=str(path))
        self.accelerator.wait_for_everyone()  # nobody reads a checkpoint half written

    # -- the loop -------------------------------------------------------------------------
    def fit(self) -> TrainState:
        if "val" not in self.eval_loaders:
            # The best epoch reads val; a loop that only trains steps epochs without fit().
            raise AdaptlabError(f"Trainer.fit needs a 'val' evaluation loader to pick the best "
                                f"epoch on; it was given {sorted(self.eval_loaders) or 'none'}")
        self._hook("on_fit_start", self._context())
        if self.task.initial_is_candidate and not self.state.history \
                and self.state.global_step == 0:
            # Epoch 0 competes for "best": when no trained epoch beats the pre-trained model
            # on validation (a short or shifted series), the run ends on the pre-trained
            # weights instead of a worse adaptation.
            self._evaluate_and_track()
        while self.state.epoch < self.settings.epochs and not self._stop_requested:
            self._train_one_epoch()
            if self.state.interrupted:
                break
            self._hook("on_epoch_end", self._context())
            if self._manual_sync:
                distributed.broadcast_buffers(self.unwrapped)
            if not self.sharded:  # no replicas: each process holds its own slice
                distributed.check_replicas_agree(self.unwrapped, self.state.epoch)
            self._evaluate_and_track()
            self._save_checkpoint()
            self.bus.emit("epoch_end", epoch=self.state.epoch)
            if self._should_stop_early():
                self.state.stopped_early = True
                self.bus.emit("early_stop", epoch=self.state.epoch,
                              best_epoch=self.state.best_epoch)
                break
        if self._stop_requested and self.state.epoch < self.settings.epochs \
                and not self.state.stopped_early:
            self.state.interrupted = True
        self._hook("on_fit_end", self._context())
        if not self.state.interrupted:
            self._restore_best()
        return self.state

    def _train_one_epoch(self) -> None:
        epoch = self.state.epoch + 1
        loader = self.train_loader
        skip = self.state.step_in_epoch
        if skip:
            loader = self.accelerator.skip_first_batches(loader, skip)
        # The whole loader too: a skipping one does not pass the epoch down to a sampler of
        # its own (the length-grouped one) under several processes; they share the sampler.
        for target in (self.train_loader, loader, getattr(loader, "dataset", None)):
            if hasattr(target, "set_epoch"):
                target.set_epoch(epoch)
        self.model.train()
        self.strategy.train_mode(self.unwrapped)
        self.bus.emit("epoch_start", epoch=epoch, steps=len(self.train_loader), start=skip)
        self._hook("on_epoch_start", self._context(epoch))
        started, samples, steps = time.perf_counter(), 0, 0
        for step, (inputs, labels) in enumerate(loader, start=skip):
            ctx = self._context(epoch, step + 1)
            self._hook("on_step_start", ctx)
            loss, sums = self._train_step(inputs, labels, ctx)
            self._accumulate(loss * len(labels), sums, len(labels))
            samples += len(labels)
            steps += 1
            self.state.global_step += 1
            ctx.global_step = self.state.global_step
            self.bus.emit("step", epoch=epoch, step=step + 1, global_step=self.state.global_step,
                          loss=loss, lr=self.scheduler.get_last_lr()[0],
                          samples=len(labels) * self.processes)  # the global batch
            self._hook("on_step_end", ctx)
            if self.processes > 1:
                self._stop_requested = distributed.any_process(self._stop_requested)
            if self._stop_requested and step + 1 < len(self.train_loader):
                self.state.step_in_epoch = step + 1
                self.state.interrupted = True
                self._save_checkpoint()
                self.bus.emit("stopped", epoch=epoch, step=step + 1)
                return
        if self.processes > 1:
            samples = int(distributed.sum_over_processes([float(samples)])[0])
            self.state.epoch_sums, self.state.epoch_samples = self._global_epoch_sums()
        self.meter.add_epoch(time.perf_counter() - started, samples, steps)
        self.bus.emit("cost", **self.meter.to_dict())
        self._epoch_train = {k: v / max(self.state.epoch_samples, 1)
                             for k, v in self.state.epoch_sums.items()}
        self.bus.emit("train_metrics", epoch=epoch, metrics=self._epoch_train)
        self.state.epoch_sums, self.state.epoch_samples = {}, 0
        self.state.epoch = epoch
        self.state.step_in_epoch = 0

    def _accumulate(self, loss_sum: float, sums: dict[str, float], count: int) -> None:
        totals = self.state.epoch_sums
        for name, value in {"loss": loss_sum, **sums}.items():
            totals[name] = totals.get(name, 0.0) + value
        self.state.epoch_sums = totals
        self.state.epoch_samples += count

    def _forward(self, inputs, labels, count: bool):
        if self.channels_last:
            inputs = channels_last_inputs(inputs)
        # A placed model (not prepared by Accelerate) has no autocast of its own.
        placed = self._manual_sync or self.sharded
        with self.accelerator.autocast() if placed else nullcontext():
            if not count:
                outputs = self.model(inputs)
                return outputs, self.task.loss(outputs, labels)
            with SavedActivationCounter(self.unwrapped) as counter:
                outputs = self.model(inputs)
                loss = self.task.loss(outputs, labels)
        self.meter.record_activations(counter.bytes)
        return outputs, loss

    def _train_step(self, inputs, labels, ctx: HookContext) -> tuple[float, dict[str, float]]:
        signature = self.optim.trainable_signature()
        count = signature != self._measured_signature
        if count:
            self._measured_signature = signature
            # Module modes follow the trainable set (a frozen BatchNorm keeps its statistics):
            # set from the set itself, not from when the epoch began, so a run resumed
            # mid-epoch runs in the same modes as one that never stopped.
            self.model.train()
            self.strategy.train_mode(self.unwrapped)
            self.meter.measure_model(self.unwrapped)  # a strategy may have grown parameters
        while True:
            try:
                loss, sums = self._pieces_step(inputs, labels, ctx, count)
                break
            except torch.OutOfMemoryError:
                self.optimizer.zero_grad(set_to_none=True)
                self.micro.after_out_of_memory(len(labels), self.processes, self.bus)
        if count:
            self.bus.emit("cost", **self.meter.to_dict())
        return loss, sums

    def _pieces_step(self, inputs, labels, ctx: HookContext, count: bool
                     ) -> tuple[float, dict[str, float]]:
        """One optimizer step's forward and backward, over the batch in ``micro.pieces``
        pieces (one unless memory ran out); each piece's loss weighs by its share."""
        pieces = split_batch(inputs, labels, self.micro.pieces) if self.micro.pieces > 1 \
            else [(inputs, labels)]
        shares = self._loss_shares([piece_labels for _, piece_labels in pieces])
        total, sums = 0.0, {}
        with self.accelerator.accumulate(self.model):
            for index, (piece, piece_labels) in enumerate(pieces):
                last = index == len(pieces) - 1
                with (nullcontext() if last or self.processes == 1
                      else self.accelerator.no_sync(self.model)):
                    outputs, loss = self._forward(piece, piece_labels, count and index == 0)
                    ctx.loss, ctx.outputs = loss, outputs
                    for name, value in self.task.batch_metrics(outputs, piece_labels).items():
                        sums[name] = sums.get(name, 0.0) + value
                    self._hook("on_before_backward", ctx)
                    self.accelerator.backward(loss * shares[index] if shares else loss)
                    self._hook("on_after_backward", ctx)
                total += float(loss.detach()) * len(piece_labels)
            if self.accelerator.sync_gradients:
                self._optimizer_step(ctx)
        return total / len(labels), sums

    def _loss_shares(self, pieces: list) -> list[float] | None:
        """What each piece's mean loss is multiplied by so that the gradient, summed over the
        pieces and averaged over the processes, is the whole global batch's mean loss's
        (a class-weighted mean divides by its weights, which differ from piece to piece);
        None when the batch is one piece in one process."""
        if len(pieces) == 1 and self.processes == 1:
            return None
        weights = [float(self.task.loss_denominator(labels)) for labels in pieces]
        whole = distributed.sum_over_processes([sum(weights)])[0]
        return [w * self.processes / whole for w in weights]

    def _optimizer_step(self, ctx: HookContext) -> None:
        params = self.optim.parameters()
        if self._manual_sync:
            distributed.average_gradients(params)
        if self.settings.max_grad_norm:
            self.accelerator.clip_grad_norm_([p for p in params if p.requires_grad],
                                             self.settings.max_grad_norm)
        self._hook("on_before_optimizer_step", ctx)
        signature = self.optim.trainable_signature()
        if signature != self._step_signature:
            if self._step_signature is not None and self.processes > 1 \
                    and not (self._manual_sync or self.sharded):
                raise AdaptlabError(
                    f"strategy {self.strategy.name!r} changed what trains during training, "
                    "which several processes cannot follow under DistributedDataParallel; "
                    "set changes_trainable_set = True on the strategy")
            # Frozen since the last step (or by a hook just now): no update, no state kept.
            self.optim.drop_frozen()
            self._step_signature = signature
        gradients = sum(sharding.local(p.grad).numel() * p.grad.element_size() for p in params
                        if p.grad is not None)
        trainable = sum(p.numel() for p in params if p.requires_grad)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.meter.record_step(trainable, gradients, self.optim.state_bytes())

    def evaluate(self, split: str) -> dict:
        """The task's metrics over the whole split, the same on every process."""
        if split != "val":
            return self._measure(split)
        fingerprint = self._fingerprint()
        if self._val_measured is not None and self._val_measured[0] == fingerprint:
            return dict(self._val_measured[1])
        metrics = self._measure(split)
        self._val_measured = (fingerprint, dict(metrics))
        return metrics

    @torch.no_grad()
    def _fingerprint(self) -> tuple[float, float]:
        """Sums over every parameter and buffer: any update, restore or average moves them."""
        tensors = [sharding.local(t.detach()) for t in (*self.unwrapped.parameters(),
                                                          *self.unwrapped.buffers())
                   if t.is_floating_point()]
        # Accumulated in float64; the plain sum needs no float64 copy of the tensor.
        sums = [float(sum(t.sum(dtype=torch.float64) for t in tensors)),
                float(sum(torch.linalg.vector_norm(t, 1, dtype=torch.float64)
                          for t in tensors))]
        if self.sharded:  # over every slice, so that every process decides alike
            sums = distributed.sum_over_processes(sums)
        return sums[0], sums[1]

    def _measure(self, split: str) -> dict:
        from adaptlab.engine.split_evaluation import evaluate_split

        return evaluate_split(self.accelerator, self.task, self.model, self.eval_loaders[split],
                              self._plain_eval[split])

    def _evaluate_and_track(self) -> None:
        metrics = self.evaluate("val")
        self.bus.emit("eval", epoch=self.state.epoch, split="val", metrics=metrics)
        entry = {"epoch": self.state.epoch, "val": metrics}
        if self.state.epoch and self._epoch_train:  # epoch 0 (the pre-trained model) has none
            entry["train"] = self._epoch_train
        self.state.history.append(entry)
        value = metrics[self.task.monitor]
        if self.settings.average_top_k > 1:
            self.state.top_epochs = self._top_epochs().offer(
                self.state.top_epochs, value, self.state.epoch,
                self._saved(), self.accelerator.is_main_process)
        best = self.state.best_metric
        if best is None or (value > best if self.task.higher_is_better else value < best):
            self.state.best_metric, self.state.best_epoch = value, self.state.epoch
            self.state.epochs_without_improvement = 0
            self._save_best()
        else:
            self.state.epochs_without_improvement += 1

    def _should_stop_early(self) -> bool:
        patience = self.settings.early_stopping_patience
        return bool(patience) and self.state.epochs_without_improvement >= patience

    def _best_path(self) -> Path:
        return self.checkpoint_dir / "best.safetensors"

    def _save_best(self) -> None:
        tensors = self._saved()
        if self.accelerator.is_main_process:
            tensors = {k: v.cpu() for k, v in tensors.items()}
            atomic_write_with(self._best_path(), lambda tmp: save_file(tensors, str(tmp)))

    def _top_epochs(self):
        from adaptlab.engine.top_epochs import TopEpochs

        return TopEpochs(self.checkpoint_dir / "top", self.settings.average_top_k,
                         self.task.higher_is_better)

    def _restore_best(self) -> None:
        """End on the best validation epoch's weights, as the report says it does, or with
        ``average_top_k`` on the average of the k best epochs' when validation does not say
        the average is worse than the best epoch."""
        self.accelerator.wait_for_everyone()  # the main process wrote the best epoch's file
        if self._best_path().is_file() and self.state.best_epoch != self.state.epoch:
            self.strategy.load_saved(self.unwrapped, load_file(str(self._best_path())))
            self.bus.emit("restore_best", epoch=self.state.best_epoch)
        if self.settings.average_top_k > 1 and len(self.state.top_epochs) > 1:
            self._average_top_epochs()

    def _average_top_epochs(self) -> None:
        """Averaging weights off one trajectory can fall between basins (Wortsman et al.'s
        caveat for soups): the average is kept only if its validation metric is at least the
        best epoch's, else the run stays on the best epoch, and the event says which."""
        self.accelerator.wait_for_everyone()  # the main process wrote the epochs' files
        best = {k: v.clone() for k, v in self._saved().items()}
        epochs = [int(e) for _, e in self.state.top_epochs]
        self.strategy.load_saved(self.unwrapped,
                                 self._top_epochs().average(self.state.top_epochs))
        value = self.evaluate("val")[self.task.monitor]
        best_value = self.state.best_metric
        kept = value >= best_value if self.task.higher_is_better else value <= best_value
        if not kept:
            self.strategy.load_saved(self.unwrapped, best)
        self.bus.emit("average_top_k", epochs=epochs, val=value, best_val=best_value,
                      kept=bool(kept))
