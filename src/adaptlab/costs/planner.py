"""Training memory predicted without training: ``adaptlab plan`` and the setup panel's line.

Per strategy, the task model is built as a run builds it (:func:`adaptlab.assembly.assemble`,
the task's ``build_model``, the strategy's ``setup``) and the four kinds of ``costs.json``
``memory_bytes`` are counted as :class:`adaptlab.costs.meter.CostMeter` counts them:

- ``parameters``: every parameter, a shared one once;
- ``gradients``: the trainable parameters the loss reaches (the engine's AdamW step and the
  meter see a gradient only on those);
- ``optimizer``: AdamW's state of those tensors, as a real AdamW holds it after one step;
- ``activations``: the bytes autograd saves in the forward and loss of the run's first batch,
  counted with saved-tensor hooks while the model runs on fake tensors
  (``FakeTensorMode``): shapes, dtypes and aliasing are those of a real forward, but nothing is
  computed or allocated, so a large backbone at a large batch plans in about a second
  (the counting: :mod:`adaptlab.costs.fake_count`).

A strategy whose trainable set changes during a run predicts the set of each of the run's
optimizer steps (``Strategy.planned_trainable_sets``, given the rate every parameter steps
with, :mod:`adaptlab.costs.step_rates`; SlimFit replays its schedule from the run's starting
weights, so a run that starts from a source run is planned from that run's weights, and from
where one real backward of the first batch reaches, on the CPU: the only computed step of a
plan, about 2 s for MiniLM at batch 32 on two cores); each
kind is planned as its peak over those sets, as ``costs.json`` keeps the peak over the steps
taken, and the total as the peak over the sets of a set's four kinds together (``costs.json``
``peak_total_bytes``), which is below the sum of the per-kind peaks when they fall on different
sets.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._pytree import tree_map

from adaptlab.config import RunConfig
from adaptlab.costs.fake_count import (
    FakeModel,
    count_set,
    fake_unsupported,
    set_trainable,
    tensor_bytes,
    warm_fake_tensors,
)
from adaptlab.costs.sizes import format_size
from adaptlab.costs.step_rates import StepRates, reached_entries, step_rates
from adaptlab.errors import AdaptlabError, did_you_mean

KINDS = ("parameters", "gradients", "optimizer", "activations")

# The most trainable sets a plan counts (one fake forward and one training batch each), in the
# order the run's steps reach them. SlimFit's replay follows a run through its first rotation
# and departs soon after (strategies/slimfit/replay.py); a 220-step point-cloud run reaches 83
# sets, whose counting took a minute. 32 covers the rotation and the steps after it of the
# benchmarks' runs (13 to 33 sets) and keeps a plan to seconds.
MAX_COUNTED_SETS = 32


@dataclass
class StrategyPlan:
    """One strategy's predicted peak memory by kind (``costs.json`` ``memory_bytes`` keys)."""

    strategy: str
    memory_bytes: dict[str, int]
    trainable_params: int
    total_params: int
    planned_sets: int  # trainable sets counted (1 unless the strategy's set changes)
    planned_steps: int  # optimizer steps whose set was planned (1 for a set that never changes)
    forward: str  # "fake": counted on fake tensors; "real": a real forward (see MemoryPlanner._count_sets)
    seconds: float
    # The heaviest planned set's four kinds together (costs.json peak_total_bytes).
    total_bytes: int
    fits: bool | None = None  # within the budget; None when there is no budget

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "memory_bytes": dict(self.memory_bytes),
                "total_bytes": self.total_bytes, "fits": self.fits,
                "trainable_params": self.trainable_params, "total_params": self.total_params,
                "planned_sets": self.planned_sets,
                "planned_steps": self.planned_steps, "forward": self.forward,
                "seconds": round(self.seconds, 3)}


@dataclass
class MemoryPlan:
    """Every planned strategy for one domain, data, backbone, batch and input size."""

    domain: str
    dataset: str | None
    backbone: str
    batch_size: int
    input_shape: Any  # the first batch's input shape (a dict of shapes for text inputs)
    device: str
    mixed_precision: str
    budget_bytes: int | None
    processes: int = 1  # the plans are the main process's of these
    sharded: bool = False  # fsdp: weights, gradients and optimizer state in slices
    plans: list[StrategyPlan] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # strategies that do not apply
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "dataset": self.dataset, "backbone": self.backbone,
                "batch_size": self.batch_size, "input_shape": self.input_shape,
                "device": self.device, "mixed_precision": self.mixed_precision,
                "budget_bytes": self.budget_bytes, "processes": self.processes,
                "sharded": self.sharded, "plans": [p.to_dict() for p in self.plans],
                "skipped": self.skipped, "seconds": round(self.seconds, 3)}

    def text(self) -> str:
        """A table for a terminal."""
        from adaptlab.summary import text_table

        rows = [["strategy", *KINDS, "total", "fits", "plan s"]]
        for plan in self.plans:
            fits = "-" if plan.fits is None else ("yes" if plan.fits else "NO")
            rows.append([plan.strategy, *(format_size(plan.memory_bytes[k]) for k in KINDS),
                         format_size(plan.total_bytes), fits, f"{plan.seconds:.2f}"])
        budget = format_size(self.budget_bytes) if self.budget_bytes else "none"
        each = "" if self.processes == 1 else (
            f", per process of {self.processes}" + (" (sharded)" if self.sharded else ""))
        lines = [f"{self.domain}: {self.backbone}, batch {self.batch_size}, input "
                 f"{self.input_shape}, {self.device} ({self.mixed_precision} mixed precision), "
                 f"budget {budget}{each}", text_table(rows)]
        lines += [f"skipped {s['strategy']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines)


# -- what the engine would use -------------------------------------------------------------------
def planned_device(config: RunConfig) -> tuple[str, str]:
    """(device type, mixed precision) the run would train with, chosen as the engine chooses."""
    from adaptlab.engine.accelerator import check_device

    on_cuda, precision = check_device(config.device, config.mixed_precision)
    # MPS has no fake-tensor device of its own here: planned as the CPU (same dtypes).
    return ("cuda" if on_cuda else "cpu"), precision


def device_memory_bytes(device: str) -> int | None:
    """The device's total memory, the default budget; None on the CPU (no budget)."""
    if device != "cuda":
        return None
    return int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)


# -- the planner ---------------------------------------------------------------------------------
def check_strategy_names(names: list[str]) -> None:
    """Refuse unknown strategy names, naming the nearest known ones."""
    from adaptlab.strategies.registry import strategy_names

    known = strategy_names()
    for name in names:
        if name not in known:
            raise AdaptlabError(f"--strategy {name!r}: unknown strategy; "
                                f"{did_you_mean(name, known)}known: "
                                f"{', '.join(known)}")


class MemoryPlanner:
    """Plans strategies for one config's data and backbone (loaded once); the strategy, its
    options, the batch size, the input size and the epochs may change between calls.

    >>> planner = MemoryPlanner(RunConfig(domain="wildlife", batch_size=32))  # doctest: +SKIP
    >>> planner.plan("lora").total_bytes  # doctest: +SKIP
    """

    def __init__(self, config: RunConfig) -> None:
        from adaptlab.assembly import assemble
        from adaptlab.tasks.registry import make_task

        parts = assemble(config)
        self.config, self.domain, self.data, self.backbone = (parts.config, parts.domain,
                                                              parts.data, parts.backbone)
        self.task = make_task(parts.data, self.config.class_weighting, parts.backbone,
                              self.config.forecast_loss)
        self._batches: dict[tuple, Any] = {}
        self._loaders: dict[tuple, Any] = {}
        warm_fake_tensors()

    def first_batch(self, config: RunConfig):
        """The run's first training batch: the loader built as the session builds it, shuffled
        as Accelerate shuffles it for epoch 1 (text pads to each batch's longest, so which
        samples come first sets the activations' size)."""
        key = (config.batch_size, config.image_size, config.seed)
        if key not in self._batches:
            self._batches = {key: next(self._epoch_batches(config, 1))}
        return self._batches[key]

    def optimizer_steps(self, config: RunConfig) -> int:
        """Optimizer steps the run takes, counted as the engine counts its schedule's total:
        batches per epoch over gradient accumulation (a partial group still steps), times
        epochs."""
        return self._steps_per_epoch(config) * config.epochs

    def step_batches(self, config: RunConfig, steps: int) -> Iterator:
        """The batch on which each of the run's first ``steps`` optimizer steps has its saved
        activations counted (the step's first micro-batch), epoch by epoch as the run
        reshuffles them; one at a time, as a large batch of images can be hundreds of MB."""
        per_epoch = self._steps_per_epoch(config)
        for epoch in range(1, -(-steps // per_epoch) + 1):
            wanted = min(per_epoch, steps - (epoch - 1) * per_epoch) * config.grad_accum
            for index, batch in enumerate(self._epoch_batches(config, epoch)):
                if index % config.grad_accum == 0:
                    yield batch
                if index + 1 >= wanted:
                    break

    def _steps_per_epoch(self, config: RunConfig) -> int:
        return -(-len(self._loader(config)) // config.grad_accum)

    def _loader(self, config: RunConfig):
        from accelerate.data_loader import prepare_data_loader
        from torch.utils.data import DataLoader

        from adaptlab.data.length_grouped import training_order
        from adaptlab.data.torch_datasets import make_torch_dataset

        key = (config.batch_size, config.image_size, config.seed, config.group_by_length)
        if key not in self._loaders:
            dataset = make_torch_dataset(self.data, "train", self.backbone, True,
                                         {"image_size": config.image_size, "seed": config.seed})
            loader = DataLoader(dataset, batch_size=config.batch_size,
                                collate_fn=getattr(dataset, "collate", None),
                                **training_order(dataset, config.batch_size, config.seed,
                                                 config.group_by_length))
            # The run seeds torch with config.seed before Accelerate wraps its loader, and
            # Accelerate's seedable sampler starts from that seed.
            loader = prepare_data_loader(loader, num_processes=1, process_index=0,
                                         put_on_device=False, use_seedable_sampler=True,
                                         data_seed=config.seed)
            self._loaders = {key: loader}
        return self._loaders[key]

    def _epoch_batches(self, config: RunConfig, epoch: int):
        """The run's training batches of ``epoch`` (counted from 1, as the engine counts)."""
        loader = self._loader(config)
        for target in (loader, getattr(loader, "dataset", None)):
            if hasattr(target, "set_epoch"):
                target.set_epoch(epoch)
        return iter(loader)

    def fresh_model(self, strategy, config: RunConfig):
        """The task model a run of ``strategy`` starts from, set up, from an untouched copy of
        the backbone (a strategy's apply changes the model it is given)."""
        module, head = copy.deepcopy((self.backbone.module, self.backbone.pretrained_head))
        backbone = dataclasses.replace(self.backbone, module=module, pretrained_head=head)
        model, layer_map = self.task.build_model(backbone, strategy.config)
        strategy.check(layer_map)  # the refusals a run makes before it starts
        strategy.check_model(model, layer_map)
        if config.init_from and strategy.changes_trainable_set:
            # The run starts from the source run's weights, and a strategy whose set follows
            # training (SlimFit's scores are relative changes of those weights) plans from
            # them; for the others only shapes count.
            from adaptlab.transfer.init_weights import load_source_weights

            load_source_weights(model, layer_map, config.init_from,
                                self.data.class_names or None)
        # A run seeds torch with its seed just before setup, and a strategy may read it
        # (SlimFit's initial scores, which set the steps it plans); the caller's stream is kept.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = strategy.setup(model, layer_map)
        if config.gradient_checkpointing:  # as the run does after setup: fewer saved tensors
            from adaptlab.engine.device_path import enable_gradient_checkpointing

            enable_gradient_checkpointing(model, self.backbone.name)
        return model, layer_map

    def step_rates(self, model, strategy, config: RunConfig) -> StepRates:
        """The rates of ``config``'s run of ``strategy`` (set up on ``model``), step by step:
        the config's rate when it is a run of that strategy, else the strategy's default, as
        a run of it that sets none would take."""
        from adaptlab.assembly import default_lr

        lr = config.lr if config.strategy == strategy.name and config.lr is not None \
            else default_lr(self.domain, config.dataset, strategy.name, config.backbone)
        rates = step_rates(model, strategy, lr, config.schedule, self.optimizer_steps(config),
                           config.warmup_ratio, config.weight_decay, config.seed)
        if not strategy.changes_trainable_set:
            return rates
        # Which entries a step moves takes its gradient (one real backward of the first batch,
        # on the CPU): a set that follows training follows how far its weights move.
        return dataclasses.replace(rates, reached=reached_entries(
            model, self.task, self.first_batch(config),
            [name for name, _ in strategy.candidates(model)]))

    def plan(self, name: str, options: dict[str, Any] | None = None,
             config: RunConfig | None = None, processes: int = 1) -> StrategyPlan:
        """Plan strategy ``name`` with ``options`` at ``config``'s batch, input size and run
        length (default: the config this planner was built with), for the main process of
        ``processes``: its share of every batch, and with ``fsdp`` its slice of the weights,
        gradients and optimizer state."""
        from adaptlab.engine.sharding import check_shards
        from adaptlab.strategies.registry import get_strategy_class

        started = time.perf_counter()
        config = config or self.config
        check_strategy_names([name])
        shards = processes if config.fsdp and processes > 1 else 1
        if shards > 1:
            check_shards(get_strategy_class(name))
        strategy = get_strategy_class(name).from_options(options or {})
        model, layer_map = self.fresh_model(strategy, config)
        steps = strategy.planned_trainable_sets(model, layer_map,
                                                self.step_rates(model, strategy, config)) \
            if strategy.changes_trainable_set else None
        if steps:
            pairs = functools.partial(self._changed_sets, config, steps)
        else:
            pairs = functools.partial(iter, [([n for n, p in model.named_parameters()
                                               if p.requires_grad], self.first_batch(config))])
        if processes > 1:
            pairs = functools.partial(_main_share, pairs, processes)
        device, precision = planned_device(config)
        counts, forward = self._count_sets(model, strategy, pairs, device, precision, shards)
        params = list({id(p): p for p in model.parameters()}.values())
        memory = {"parameters": sum(tensor_bytes(p, shards) for p in params),
                  **{kind: max(getattr(c, kind) for c in counts)
                     for kind in ("gradients", "optimizer", "activations")}}
        heaviest = max(c.gradients + c.optimizer + c.activations for c in counts)
        return StrategyPlan(strategy=name, memory_bytes=memory,
                            total_bytes=memory["parameters"] + heaviest,
                            trainable_params=max(c.trainable_params for c in counts),
                            total_params=sum(p.numel() for p in params),
                            planned_sets=len(counts), planned_steps=len(steps or [None]),
                            forward=forward,
                            seconds=time.perf_counter() - started)

    def _changed_sets(self, config: RunConfig, steps: list[list[str]]
                      ) -> Iterator[tuple[list[str], Any]]:
        """(set, batch) for each step that changes the trainable set, once per set and input
        shape: the meter counts a set's activations on the batch of the step it starts at,
        and padded text batches differ in length (a 3-step run of the tests' code files was
        planned 1.35 times its activations when every set was counted on the first batch)."""
        seen, previous = set(), None
        for names, batch in zip(steps, self.step_batches(config, len(steps)), strict=True):
            current = frozenset(names)
            key = (current, repr(_input_shape(batch)))
            if current != previous and key not in seen:
                seen.add(key)
                yield names, batch
                if len(seen) == MAX_COUNTED_SETS:
                    return
            previous = current

    def _count_sets(self, model, strategy, pairs: Callable[[], Iterator], device, precision,
                    shards: int = 1):
        """Each set counted on its batch: ``pairs()`` yields (set, batch)."""
        from torch._subclasses.fake_tensor import FakeTensorMode

        # Real tensors outside the model (a task's class weights) join as fake ones.
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        try:
            with FakeModel(model, mode, device):
                counts = []
                for names, batch in pairs():
                    with mode:
                        fake_batch = tree_map(lambda t: mode.from_tensor(t).to(device)
                                              if torch.is_tensor(t) else t, batch)
                    set_trainable(model, set(names))
                    with mode:
                        counts.append(count_set(model, self.task, strategy, fake_batch,
                                                 device, precision, shards))
                return counts, "fake"
        except (RuntimeError, NotImplementedError, TypeError) as error:
            if not fake_unsupported(error):
                raise
        # A model that reads values, not only shapes (``.item()``, data-dependent shapes, numpy)
        # cannot run on fake tensors: one real forward of the batch on the CPU instead (real
        # time and memory, the same counts on the CPU; autocast left out there).
        counts = []
        for names, batch in pairs():
            set_trainable(model, set(names))
            counts.append(count_set(model, self.task, strategy, batch, "cpu", "no", shards))
        return counts, "real"


def _main_share(pairs: Callable[[], Iterator], processes: int) -> Iterator:
    """(set, the main process's rows of the batch): Accelerate gives process i the i-th of
    ``processes`` equal slices of every global batch (``split_batches``)."""
    from adaptlab.engine.micro_batches import split_batch

    for names, batch in pairs():
        yield names, split_batch(*batch, processes)[0]


def _input_shape(inputs: Any) -> Any:
    if torch.is_tensor(inputs):
        return list(inputs.shape)
    if isinstance(inputs, dict):
        return {key: _input_shape(value) for key, value in inputs.items()}
    if isinstance(inputs, list | tuple):
        return [_input_shape(value) for value in inputs]
    return None


def plan_memory(config: RunConfig, strategies: list[str] | None = None,
                options: dict[str, dict[str, Any]] | None = None,
                budget_bytes: int | None = None, processes: int = 1) -> MemoryPlan:
    """Plan ``strategies`` (default: every registered one that applies to this backbone;
    one that does not is listed in ``skipped`` with the reason) for ``config``.

    ``options[name]`` are strategy ``name``'s options (default: ``config.strategy_options``
    for ``config.strategy``); ``budget_bytes`` defaults to the CUDA device's memory, and
    without either no plan says whether it fits. With ``processes`` > 1 each plan is the
    main process's (``MemoryPlanner.plan``), which the budget is one device's memory for.

    >>> plan_memory(RunConfig(domain="code", batch_size=8), ["head", "lora"])  # doctest: +SKIP
    """
    from adaptlab.engine.distributed import check_batch
    from adaptlab.strategies.registry import strategy_names

    started = time.perf_counter()
    named = list(strategies or [])
    check_strategy_names(named)
    if processes < 1:
        raise AdaptlabError(f"processes={processes}: needs at least 1")
    check_batch(config.batch_size, processes)
    planner = MemoryPlanner(config)
    device, precision = planned_device(planner.config)
    budget = budget_bytes if budget_bytes is not None else device_memory_bytes(device)
    options = dict(options or {})
    if planner.config.strategy not in options:
        options[planner.config.strategy] = planner.config.strategy_options
    inputs, _ = planner.first_batch(planner.config)
    result = MemoryPlan(domain=planner.config.domain, dataset=planner.config.dataset,
                        backbone=planner.config.backbone,
                        batch_size=planner.config.batch_size, input_shape=_input_shape(inputs),
                        device=device, mixed_precision=precision, budget_bytes=budget,
                        processes=processes, sharded=planner.config.fsdp and processes > 1)
    for name in named or strategy_names():
        try:
            plan = planner.plan(name, options.get(name, {}), processes=processes)
        except AdaptlabError as error:
            if named:  # asked for by name: its refusal is the answer
                raise
            result.skipped.append({"strategy": name, "reason": str(error)})
            continue
        except Exception as error:  # noqa: BLE001 -- one broken strategy plugin must not
            if named:  # stop the plans of the others (as a broken domain plugin is skipped)
                raise
            result.skipped.append({"strategy": name,
                                   "reason": f"failed: {type(error).__name__}: {error}"})
            continue
        plan.fits = None if budget is None else plan.total_bytes <= budget
        result.plans.append(plan)
    result.seconds = time.perf_counter() - started
    return result


def plan_config(domain: str, assignments: list[str], strategies: list[str] | None = None,
                **identity: Any) -> tuple[RunConfig, dict[str, dict[str, Any]]]:
    """The config and per-strategy options ``adaptlab plan`` means: the domain's defaults,
    then ``--set KEY=VALUE`` items, each a training setting or an option of any strategy
    planned (it goes to every planned strategy that has it); a key none knows is refused."""
    from adaptlab.run import config_for
    from adaptlab.strategies.registry import get_strategy_class, strategy_names

    check_strategy_names(list(strategies or []))
    keys: dict[str, set[str]] = {}
    for name in strategies or strategy_names():
        try:
            keys[name] = get_strategy_class(name).option_names()
        except Exception:  # noqa: BLE001 -- a strategy that fails to import plans as skipped
            keys[name] = set()
    config = config_for(domain, **{k: v for k, v in identity.items() if v is not None})
    known = {f.name for f in dataclasses.fields(RunConfig)} | set().union(*keys.values())
    for item in assignments:
        key = item.partition("=")[0].strip().removeprefix("strategy.")
        if key and "=" in item and key not in known:
            raise AdaptlabError(f"--set {key}: unknown key; {did_you_mean(key, known)}not a "
                                f"training setting nor an option of {', '.join(keys)}")
    config = config.with_overrides(assignments, set().union(*keys.values()))
    options = {name: {k: v for k, v in config.strategy_options.items() if k in names}
               for name, names in keys.items()}
    return dataclasses.replace(config, strategy_options={}), options
