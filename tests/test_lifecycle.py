"""The strategy lifecycle and the engine hooks, through a strategy whose trainable set changes
mid-epoch: resume is bit-identical, the optimizer keeps state only for what trains, frozen
units stay in every checkpoint, tensor state survives, and the cost meter sees the change.
Every registered strategy reloads through ``load_run`` to the logits it ended training with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adaptlab.backbones.layer_map import parameters_under
from adaptlab.config import RunConfig
from adaptlab.engine.callbacks import EngineCallback
from adaptlab.run import run
from adaptlab.strategies.base import Strategy, StrategyConfig, set_requires_grad
from adaptlab.strategies.registry import register_strategy, strategy_names

pytestmark = pytest.mark.slow

SWAP_AFTER_STEP = 2


@dataclass
class SwapConfig(StrategyConfig):
    pass


class _Swap(EngineCallback):
    def __init__(self, strategy: SwapBlocks) -> None:
        self.strategy = strategy

    def on_fit_start(self, ctx) -> None:
        self.strategy.set_trainable(ctx.model)  # after a resume: the restored phase

    def on_after_backward(self, ctx) -> None:
        # Tensor state: a running mean of the head's gradient norm, seen every micro-batch.
        norm = ctx.model.task_head.weight.grad.norm().reshape(1)
        self.strategy.grad_norm_mean.mul_(0.9).add_(0.1 * norm)

    def on_step_end(self, ctx) -> None:
        if ctx.global_step == SWAP_AFTER_STEP:
            self.strategy.swapped = True
            self.strategy.set_trainable(ctx.model)


@register_strategy
class SwapBlocks(Strategy):
    """Trains the head and the top block; after step 2 freezes the top block and unfreezes
    the one below it."""

    name = "test-swap-blocks"
    config_class = SwapConfig

    def __init__(self, config) -> None:
        super().__init__(config)
        self.swapped = False
        self.grad_norm_mean = torch.zeros(1)
        self.layer_map = None

    def select_trainable(self, model, layer_map) -> None:
        self.layer_map = layer_map
        self.set_trainable(model)

    def set_trainable(self, model) -> None:
        set_requires_grad([model], False)
        block = self.layer_map.blocks[-2 if self.swapped else -1]
        for _, param in parameters_under(model, [*block, self.layer_map.head]):
            param.requires_grad_(True)

    def trainable_candidates(self, model, layer_map) -> list[str]:
        names = [*layer_map.blocks[-1], *layer_map.blocks[-2], layer_map.head]
        return [name for name, _ in parameters_under(model, names)]

    def callbacks(self) -> list:
        return [_Swap(self)]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "swapped": self.swapped}

    def load_state_dict(self, state: dict) -> None:
        self.swapped = state["swapped"]

    def tensor_state(self) -> dict[str, torch.Tensor]:
        return {"grad_norm_mean": self.grad_norm_mean.clone()}

    def load_tensor_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.grad_norm_mean = tensors["grad_norm_mean"].clone()


def _config(data: Path, out: Path, strategy: str, epochs: int = 2,
            batch_size: int = 4) -> RunConfig:
    return RunConfig(domain="wildlife", data=str(data), strategy=strategy, out=str(out),
                     device="cpu", epochs=epochs, image_size=64, batch_size=batch_size,
                     lr=3e-3)


def _adam_bytes(params) -> int:
    # AdamW keeps two moments per value and a scalar step count per tensor.
    return sum(2 * p.numel() * p.element_size() + 4 for p in params)


def _traced(config: RunConfig, stop_at: int | None = None, resume: bool = False):
    holder, costs = {}, []

    def watch(event):
        if event["event"] == "cost":
            costs.append(event)
        if stop_at and event["event"] == "step" and event["global_step"] == stop_at:
            holder["trainer"].request_stop()

    result = run(config, resume=resume, progress=False, subscribers=[watch],
                 on_trainer=lambda trainer: holder.setdefault("trainer", trainer))
    return result, holder["trainer"], costs


def test_a_strategy_that_swaps_blocks_mid_epoch_resumes_bit_identical(tmp_path, colour_folder):
    # Batches of 2: several steps per epoch, so the swap and the stop fall mid-epoch.
    reference, trainer, cost_events = _traced(_config(colour_folder, tmp_path / "ref",
                                                      "test-swap-blocks", batch_size=2))
    model, layer_map = trainer.unwrapped, trainer.strategy.layer_map
    steps = reference.costs["optimizer_steps"]
    assert steps > 2 * SWAP_AFTER_STEP  # the swap happens mid-epoch, most steps come after it
    top = [p for _, p in parameters_under(model, layer_map.blocks[-1])]
    below = [p for _, p in parameters_under(model, layer_map.blocks[-2])]
    head = [p for _, p in parameters_under(model, [layer_map.head])]

    # The optimizer holds state for what trains now, not for the block frozen mid-run.
    with_state = set(trainer.optim.params_with_state())
    expected = {n for n, _ in parameters_under(model, [*layer_map.blocks[-2], layer_map.head])}
    assert with_state == expected

    # Optimizer memory: top block + head before the swap, block below + head after it; the
    # median is the later phase (more steps), the peak the larger of the two.
    before, after = _adam_bytes(top + head), _adam_bytes(below + head)
    assert reference.costs["memory_bytes"]["optimizer"] == max(before, after)
    assert reference.costs["memory_bytes_median"]["optimizer"] == after
    # Saved activations were counted again when the trainable set changed: training the
    # lower block keeps the top block's inputs for backward too.
    counted = [e["memory_bytes"]["activations"] for e in cost_events]
    assert len(set(counted)) >= 2 and counted[0] < max(counted)
    assert reference.costs["memory_bytes"]["activations"] == max(counted)

    # The final weights hold every declared tensor, the top block included (frozen at save).
    final = load_file(str(reference.run_dir / "weights.safetensors"))
    names = {n for n, _ in parameters_under(model, [*layer_map.blocks[-1],
                                                    *layer_map.blocks[-2], layer_map.head])}
    assert names <= final.keys()

    # Stopped right after the swap (mid-epoch), then resumed: bit-identical weights and
    # strategy tensor state.
    stop = SWAP_AFTER_STEP + 1
    stopped, _, _ = _traced(_config(colour_folder, tmp_path / "stopped", "test-swap-blocks",
                                    batch_size=2), stop_at=stop)
    assert stopped.metrics == {}
    latest = tmp_path / "stopped" / "checkpoints"
    checkpoint = latest / (latest / "latest").read_text().strip()
    saved = load_file(str(checkpoint / "model.safetensors"))
    assert names <= saved.keys()  # the frozen top block is in the checkpoint
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["strategy"]["swapped"] is True and state["train"]["global_step"] == stop
    assert state["train"]["step_in_epoch"] == stop  # stopped mid-epoch

    resumed, _, _ = _traced(RunConfig(domain="wildlife", out=str(tmp_path / "stopped")),
                            resume=True)
    again = load_file(str(resumed.run_dir / "weights.safetensors"))
    assert again.keys() == final.keys()
    for name in final:
        assert torch.equal(final[name], again[name]), name
    last = sorted((tmp_path / "ref" / "checkpoints").glob("epoch-*"))[-1].name
    ref_state = load_file(str(tmp_path / "ref" / "checkpoints" / last / "strategy.safetensors"))
    res_state = load_file(str(tmp_path / "stopped" / "checkpoints" / last /
                              "strategy.safetensors"))
    assert ref_state["grad_norm_mean"].item() > 0
    assert torch.equal(ref_state["grad_norm_mean"], res_state["grad_norm_mean"])
    assert resumed.metrics["final"] == reference.metrics["final"]


BUILT_IN = [name for name in strategy_names() if not name.startswith("test-")]
# Strategies made for other backbones than this CNN (token sequences, an encoder and a language
# model, Linear layers only): they refuse it before the run folder exists; their own tests
# reload and explain them on the backbones they take.
REFUSE_CNN = {"vpt": "timm-vit, hf-encoder, point-transformer",
              "dvpt": "timm-vit, hf-encoder, point-transformer",
              "idpt": "point-transformer", "bridge": "", "vera": "Linear"}


@pytest.mark.parametrize("strategy", BUILT_IN)
def test_every_strategy_reloads_to_its_final_logits_and_explains(strategy, tmp_path,
                                                                 colour_folder):
    from adaptlab import load_run
    from adaptlab.errors import AdaptlabError
    from adaptlab.explain import explain
    from adaptlab.tasks.base import move_to

    config = _config(colour_folder, tmp_path / strategy, strategy, epochs=1)
    if strategy in REFUSE_CNN:
        with pytest.raises(AdaptlabError, match=f"strategy '{strategy}'") as refused:
            run(config, progress=False)
        assert REFUSE_CNN[strategy] in str(refused.value)
        assert len(str(refused.value).splitlines()) == 1
        assert not (tmp_path / strategy).exists()
        return
    result, trainer, _ = _traced(config)
    trained = trainer.unwrapped.eval()
    batch = move_to(next(iter(trainer.eval_loaders["test"]))[0], "cpu")
    with torch.no_grad():
        expected = trained(batch)
    loaded = load_run(result.run_dir, device="cpu")
    with torch.no_grad():
        assert torch.allclose(loaded.model(batch), expected, atol=1e-5)
    # The reloaded model differs from the pre-trained one: the check would catch a reload
    # that silently dropped the adaptation.
    if strategy != "head":  # head's unadapted model keeps the trained head: nothing to see
        with loaded.unadapted() as before, torch.no_grad():
            assert not torch.allclose(before(batch), expected, atol=1e-4)
    # Saliency without the checks: what is tested is that the reloaded structure explains.
    explanation = explain(loaded, "saliency", samples=1, report=False, compare=False,
                          checks=False)
    maps = explanation.result.features
    assert len(maps) == 1 and torch.isfinite(maps[0]).all() and maps[0].abs().sum() > 0


def test_init_from_a_lora_run_starts_from_its_merged_weights(tmp_path, colour_folder):
    from adaptlab import load_run
    from adaptlab.assembly import assemble
    from adaptlab.tasks.registry import make_task
    from adaptlab.transfer.init_weights import load_source_weights

    source = run(_config(colour_folder, tmp_path / "lora", "lora", epochs=1), progress=False)
    # peft's own merge of the reloaded adapter is what the target must start from.
    merged = load_run(source.run_dir, device="cpu").model.merge_and_unload().state_dict()
    parts = assemble(_config(colour_folder, tmp_path / "target", "full"))
    task = make_task(parts.data, "balanced", parts.backbone)
    model, layer_map = task.build_model(parts.backbone, parts.strategy.config)
    pretrained = {k: v.clone() for k, v in model.state_dict().items()}
    counts = load_source_weights(model, layer_map, source.run_dir, parts.data.class_names)
    state = model.state_dict()
    changed = [k for k in state if k.startswith("backbone.")
               and not torch.equal(state[k], pretrained[k])]
    assert counts["backbone"] == len(changed) > 0
    assert counts["head"] > 0  # same classes: the trained head comes along
    for name in changed + [k for k in state if k.startswith("task_head.")]:
        assert torch.allclose(state[name], merged[name], atol=1e-6), name


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_swapping_blocks_on_cuda_drops_state_and_reloads(tmp_path, colour_folder, precision):
    """The hooks on the GPU path: under autocast (and the scaler's unscale before the
    optimizer step) a frozen block still gets no update and keeps no state, and the run
    reloads to its final logits."""
    import dataclasses

    from adaptlab import load_run
    from adaptlab.tasks.base import move_to

    config = dataclasses.replace(_config(colour_folder, tmp_path / precision,
                                         "test-swap-blocks", batch_size=2),
                                 device="cuda", mixed_precision=precision)
    result, trainer, _ = _traced(config)
    model, layer_map = trainer.unwrapped, trainer.strategy.layer_map
    expected = {n for n, _ in parameters_under(model, [*layer_map.blocks[-2], layer_map.head])}
    assert set(trainer.optim.params_with_state()) == expected
    assert result.costs["memory_bytes"]["peak_cuda"] > 0
    batch = move_to(next(iter(trainer.eval_loaders["test"]))[0], "cuda")
    with torch.no_grad():
        trained = model.eval()(batch).float()
        reloaded = load_run(result.run_dir, device="cuda").model(batch).float()
    # The trained model runs in autocast (Accelerate wraps its forward), the reloaded one in
    # float32: equal up to 16-bit rounding.
    tolerance = 1e-4 if precision == "no" else 2e-2 * max(1.0, trained.abs().max().item())
    assert (trained - reloaded).abs().max().item() <= tolerance
    assert result.costs["reload_max_abs_diff"] <= tolerance
