"""The peft family on small models: each method trains exactly the parameters its formula
gives for the targets' shapes, reloads to the same logits, merges to the same outputs; a
method that cannot adapt a backbone is refused in one line before a run starts; AdaLoRA's
ranks survive a resume and a reload."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from torch import nn

from adaptlab.backbones.timm_backbones import timm_backbone
from adaptlab.errors import AdaptlabError
from adaptlab.strategies.base import count_parameters
from adaptlab.strategies.registry import get_strategy_class
from adaptlab.tasks.classification import build_model

pytestmark = pytest.mark.slow

CLASSES = 3
PEFT = ["lora", "ia3", "loha", "lokr", "oft", "vera", "adalora"]


@pytest.fixture(scope="module")
def vit_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm_backbone("test_vit", pretrained=False).module.state_dict()


def fresh_vit(weights):
    """The same pre-trained ViT and the same new head, as a reload builds them."""
    backbone = timm_backbone("test_vit", pretrained=False)
    backbone.module.load_state_dict(weights)
    torch.manual_seed(1)
    return build_model(backbone, CLASSES)


@pytest.fixture(scope="module")
def vit_batch() -> torch.Tensor:
    return torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(2))


def _factor(n: int) -> tuple[int, int]:
    """The divisor pair of n closest to its square root, smaller first (LoKr's split)."""
    m = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return m, n // m


def _lokr(fan_in: int, fan_out: int, r: int) -> int:
    # W = W1 (x) W2 with W1 (out_l x in_m) full and W2 (out_k x in_n), low-rank when r is
    # below half its larger side.
    (out_l, out_k), (in_m, in_n) = _factor(fan_out), _factor(fan_in)
    second = out_k * in_n if r >= max(out_k, in_n) / 2 else r * (out_k + in_n)
    return out_l * in_m + second


# Options, and the trainable values one Linear(fan_in -> fan_out) gets, by the paper's formula.
FORMULAS = {
    "lora": ({"r": 2}, lambda name, i, o: 2 * (i + o)),
    # IA3 scales the MLP's hidden activation (the input of its second layer), else the output.
    "ia3": ({}, lambda name, i, o: i if name.endswith("mlp.fc2") else o),
    "loha": ({"r": 2}, lambda name, i, o: 2 * 2 * (i + o)),
    "lokr": ({"r": 2}, lambda name, i, o: _lokr(i, o, 2)),
    # in/b skew-symmetric b x b blocks, b(b-1)/2 free values each.
    "oft": ({"block_size": 4}, lambda name, i, o: (i // 4) * (4 * 3 // 2)),
    "vera": ({"r": 4}, lambda name, i, o: o + 4),
    "adalora": ({"r": 4, "target_r": 2}, lambda name, i, o: 4 * (i + o + 1)),
}


def _vit_linears(model) -> dict[str, nn.Linear]:
    """Every Linear inside the ViT's transformer blocks (not the patch stem, not the head)."""
    return {f"backbone.blocks.{name}": module
            for name, module in model.backbone.blocks.named_modules()
            if isinstance(module, nn.Linear)}


def _train_a_little(model) -> None:
    """Move every trainable value away from its initial value, as training does."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.02 * torch.randn(param.shape, generator=generator))


def _logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(batch)


@pytest.mark.parametrize("method", PEFT)
def test_trainable_count_reload_and_merge_on_a_vit(method, vit_weights, vit_batch, tmp_path):
    options, per_layer = FORMULAS[method]
    model, layer_map = fresh_vit(vit_weights)
    linears = {name: (m.in_features, m.out_features) for name, m in _vit_linears(model).items()}
    assert len(linears) == 24  # qkv, proj, fc1, fc2 in each of 6 blocks
    strategy = get_strategy_class(method).from_options(options)
    strategy.check(layer_map)
    strategy.check_model(model, layer_map)
    assert sorted(strategy.plan(model, layer_map)["target_modules"]) == sorted(linears)
    trained = strategy.setup(model, layer_map)

    head = 64 * CLASSES + CLASSES
    expected = head + sum(per_layer(name, i, o) for name, (i, o) in linears.items())
    assert count_parameters(trained)[0] == expected

    _train_a_little(trained)
    expected_logits = _logits(trained, vit_batch)
    strategy.save_final(trained, tmp_path)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    # A reload as load_run does it: a new strategy from the same options, a fresh model.
    again = get_strategy_class(method).from_options(options)
    reloaded = again.apply(*fresh_vit(vit_weights))
    again.load_final(reloaded, tmp_path)
    assert torch.allclose(_logits(reloaded, vit_batch), expected_logits, atol=1e-5)

    # Merged into the plain task model's weights: the same outputs, not the pre-trained ones.
    plain, _ = fresh_vit(vit_weights)
    untouched = _logits(plain, vit_batch)
    plain.load_state_dict(strategy.merged_state_dict(trained), strict=True)
    assert torch.allclose(_logits(plain, vit_batch), expected_logits, atol=1e-4)
    assert not torch.allclose(untouched, expected_logits, atol=1e-3)

    # Adapters off, head kept: the pre-trained backbone under the trained head.
    with strategy.unadapted(trained, "task_head") as off:
        off_logits = _logits(off, vit_batch)
    pretrained_backbone, _ = fresh_vit(vit_weights)
    pretrained_backbone.task_head.load_state_dict(
        {k.split("modules_to_save.default.")[-1]: v for k, v in trained.state_dict().items()
         if "task_head.modules_to_save.default." in k})
    assert torch.allclose(off_logits, _logits(pretrained_backbone, vit_batch), atol=1e-5)


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_lora_inits_that_rewrite_the_base(init, vit_weights, vit_batch, tmp_path):
    model, layer_map = fresh_vit(vit_weights)
    pretrained_logits = _logits(fresh_vit(vit_weights)[0], vit_batch)
    strategy = get_strategy_class("lora").from_options({"r": 2, "init": init})
    trained = strategy.setup(model, layer_map)
    qkv = trained.base_model.model.backbone.blocks[0].attn.qkv
    # The base weight is now the residual; residual + adapter is the pre-trained weight.
    original = vit_weights["blocks.0.attn.qkv.weight"]
    assert not torch.allclose(qkv.base_layer.weight, original, atol=1e-4)
    assert torch.allclose(_logits(trained, vit_batch), pretrained_logits, atol=1e-4)
    with strategy.unadapted(trained, "task_head") as off:
        assert off is None  # adapters off is not the pre-trained model: the caller rebuilds it

    _train_a_little(trained)
    expected = _logits(trained, vit_batch)
    strategy.save_final(trained, tmp_path)
    again = get_strategy_class("lora").from_options({"r": 2, "init": init})
    reloaded = again.apply(*fresh_vit(vit_weights))
    again.load_final(reloaded, tmp_path)
    assert torch.equal(reloaded.base_model.model.backbone.blocks[0].attn.qkv.base_layer.weight,
                       qkv.base_layer.weight)  # the same residual, rebuilt deterministically
    assert torch.allclose(_logits(reloaded, vit_batch), expected, atol=1e-5)
    plain, _ = fresh_vit(vit_weights)
    plain.load_state_dict(strategy.merged_state_dict(trained))
    assert torch.allclose(_logits(plain, vit_batch), expected, atol=1e-4)


@pytest.fixture(scope="module")
def cnn_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm_backbone("test_efficientnet", pretrained=False).module.state_dict()


def fresh_cnn(weights):
    backbone = timm_backbone("test_efficientnet", pretrained=False)
    backbone.module.load_state_dict(weights)
    torch.manual_seed(1)
    return build_model(backbone, CLASSES)


def test_loha_on_a_cnn_counts_convs_batchnorms_and_head(cnn_weights, tmp_path):
    model, layer_map = fresh_cnn(cnn_weights)
    # By hand: every non-grouped Conv2d in the blocks and the neck's conv_head.
    convs = {name: m for name, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and m.groups == 1
             and (name.startswith("backbone.blocks.") or name == "backbone.conv_head")}
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert convs and norms
    strategy = get_strategy_class("loha").from_options({"r": 2})
    trained = strategy.setup(model, layer_map)
    # LoHa on a conv: two rank-2 pairs over the flattened kernel (out x in*kh*kw).
    expected = sum(2 * 2 * (m.out_channels + m.in_channels * m.kernel_size[0] * m.kernel_size[1])
                   for m in convs.values())
    expected += sum(p.numel() for m in norms for p in m.parameters())
    expected += 256 * CLASSES + CLASSES
    assert count_parameters(trained)[0] == expected

    batch = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    trained.train()
    trained(batch)  # BatchNorm statistics move: they must come back with the adapter
    _train_a_little(trained)
    expected_logits = _logits(trained, batch)
    strategy.save_final(trained, tmp_path)
    again = get_strategy_class("loha").from_options({"r": 2})
    reloaded = again.apply(*fresh_cnn(cnn_weights))
    again.load_final(reloaded, tmp_path)
    assert torch.allclose(_logits(reloaded, batch), expected_logits, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "ia3", "lokr", "oft", "adalora"])
def test_conv_methods_reload_and_merge_on_a_cnn(method, cnn_weights, tmp_path):
    options = {"block_size": 4} if method == "oft" else {}
    strategy = get_strategy_class(method).from_options(options)
    model, layer_map = fresh_cnn(cnn_weights)
    if method == "oft":  # peft 0.21's OFT is exact on 1x1 convolutions only (see oft.py)
        modules = dict(model.named_modules())
        targets = strategy.plan(model, layer_map)["target_modules"]
        assert targets and all(modules[t].kernel_size == (1, 1) for t in targets)
    trained = strategy.setup(model, layer_map)
    batch = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():  # every method starts as the pre-trained model
        assert torch.allclose(_logits(trained, batch), _logits(fresh_cnn(cnn_weights)[0], batch),
                              atol=1e-5)
    _train_a_little(trained)
    expected = _logits(trained, batch)
    strategy.save_final(trained, tmp_path)
    again = get_strategy_class(method).from_options(options)
    reloaded = again.apply(*fresh_cnn(cnn_weights))
    again.load_final(reloaded, tmp_path)
    assert torch.allclose(_logits(reloaded, batch), expected, atol=1e-5)
    plain, _ = fresh_cnn(cnn_weights)
    plain.load_state_dict(strategy.merged_state_dict(trained))
    assert torch.allclose(_logits(plain, batch), expected, atol=1e-4)


def test_oft_says_once_where_peft_moved_its_block_size(cnn_weights):
    """peft warns per layer whose input width the block size does not divide; the run's log
    gets one line naming how many layers and the sizes peft used (read from the built model)."""
    from peft.tuners.oft.layer import OFTLayer

    model, layer_map = fresh_cnn(cnn_weights)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adapted = get_strategy_class("oft").from_options({}).setup(model, layer_map)
    moved = sorted(layer.oft_block_size["default"] for layer in adapted.modules()
                   if isinstance(layer, OFTLayer) and layer.oft_block_size["default"] != 32)
    assert moved  # this CNN has layers 32 does not divide
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "Invalid `oft_block_size`" in m]
    ours = [m for m in messages if m.startswith("strategy 'oft': block_size=32")]
    assert ours == [f"strategy 'oft': block_size=32 does not divide the input width of "
                    f"{len(moved)} adapted layers; peft uses "
                    f"{', '.join(map(str, sorted(set(moved))))} there"]


def test_oft_on_dgcnn_edge_features(tmp_path):
    """DGCNN's Linear layers read 4-D edge features, which peft 0.21's OFT takes for a
    convolution's input; the strategy rotates them on their last dimension."""
    from adaptlab.backbones.point_nets import dgcnn

    def fresh():
        torch.manual_seed(0)
        return build_model(dgcnn({}), CLASSES)

    points = torch.randn(2, 128, 3, generator=torch.Generator().manual_seed(6))
    pretrained = _logits(fresh()[0], points)
    strategy = get_strategy_class("oft").from_options({"block_size": 4})
    trained = strategy.setup(*fresh())
    assert torch.allclose(_logits(trained, points), pretrained, atol=1e-5)
    _train_a_little(trained)
    expected = _logits(trained, points)
    assert not torch.allclose(expected, pretrained, atol=1e-3)
    strategy.save_final(trained, tmp_path)
    again = get_strategy_class("oft").from_options({"block_size": 4})
    reloaded = again.apply(*fresh())
    again.load_final(reloaded, tmp_path)
    assert torch.allclose(_logits(reloaded, points), expected, atol=1e-5)
    plain, _ = fresh()
    plain.load_state_dict(strategy.merged_state_dict(trained))
    assert torch.allclose(_logits(plain, points), expected, atol=1e-4)


def test_vera_is_refused_on_a_cnn_in_one_line(cnn_weights):
    from adaptlab.strategies.applicability import applicable_strategies

    model, layer_map = fresh_cnn(cnn_weights)
    with pytest.raises(AdaptlabError) as refused:
        get_strategy_class("vera").from_options({}).check_model(model, layer_map)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("strategy 'vera': applies to Linear layers; this backbone's "
                              "blocks hold ")
    held = message.split("blocks hold ")[1].split(";")[0].split(", ")
    assert "Conv2d" in held and "BatchNormAct2d" in held and "Linear" not in held
    # peft wraps Conv2d for these (its dispatch), VeRA only Linear.
    assert message.endswith("methods that apply: lora, ia3, loha, lokr, oft, adalora")
    names = applicable_strategies(model, layer_map)
    assert {"full", "head", "freeze", "lora", "ia3", "loha", "lokr", "oft", "adalora"} <= set(
        names)
    assert "vera" not in names
    # The ViT's blocks hold Linear layers only: every peft method applies.
    assert set(PEFT) <= set(applicable_strategies(*fresh_vit(
        timm_backbone("test_vit", pretrained=False).module.state_dict())))


def test_named_targets_of_an_unsupported_type_are_refused(cnn_weights):
    model, layer_map = fresh_cnn(cnn_weights)
    with pytest.raises(AdaptlabError, match="target 'backbone.conv_head' is a Conv2d; vera "
                                            "wraps Linear layers"):
        get_strategy_class("vera").from_options({"targets": "backbone.conv_head"}).plan(
            model, layer_map)
    with pytest.raises(AdaptlabError, match="init=pissa decomposes Linear weights only"):
        get_strategy_class("lora").from_options({"init": "pissa"}).check_model(model,
                                                                                layer_map)
    with pytest.raises(AdaptlabError, match="init='eva' is not one of"):
        get_strategy_class("lora").from_options({"init": "eva"})


def test_cli_domains_lists_each_strategy_for_a_backbone(capsys):
    from adaptlab.cli import main

    assert main(["domains", "wildlife", "--backbone", "efficientnet_lite0", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    verdicts = {s["name"]: s for s in payload["strategies_for_backbone"]["strategies"]}
    assert verdicts["lora"]["applies"] and verdicts["lora"]["reason"] is None
    assert not verdicts["vera"]["applies"]
    assert verdicts["vera"]["reason"].startswith("strategy 'vera': applies to Linear layers")
    assert set(verdicts) == set(payload["strategies"])
    assert main(["domains", "--json"]) == 0
    assert "strategies_for_backbone" not in json.loads(capsys.readouterr().out)


def _adalora_steps(strategy, model, optimizer, batches) -> None:
    """Optimizer steps as the engine orders them around AdaLoRA's hooks."""
    for batch in batches:
        model.train()
        model(batch).logsumexp(1).mean().backward()
        strategy.update_sensitivity()
        optimizer.step()
        optimizer.zero_grad()
        strategy.allocate()


def _adalora_model(weights, total_steps):
    strategy = get_strategy_class("adalora").from_options(
        {"r": 4, "target_r": 2, "warmup_fraction": 0.0, "final_fraction": 0.25})
    model = strategy.setup(*fresh_vit(weights))
    strategy.set_total_steps(total_steps)
    params = [p for _, p in sorted(model.named_parameters()) if p.requires_grad]
    return strategy, model, torch.optim.AdamW(params, lr=1e-2)


def test_adalora_rank_state_survives_a_resume(vit_weights):
    generator = torch.Generator().manual_seed(5)
    batches = [torch.randn(1, 3, 160, 160, generator=generator) for _ in range(6)]
    strategy, model, optimizer = _adalora_model(vit_weights, len(batches))
    _adalora_steps(strategy, model, optimizer, batches)
    ranks = strategy.ranks()
    assert len(ranks) == 24 and sum(ranks.values()) <= 2 * 24  # cut from 4 to 2 on average

    # Stopped after 2 steps: what a checkpoint keeps (JSON state, tensor state, declared
    # tensors, optimizer), into a new strategy and model, then the remaining steps.
    first, model_a, optimizer_a = _adalora_model(vit_weights, len(batches))
    _adalora_steps(first, model_a, optimizer_a, batches[:2])
    state = json.loads(json.dumps(first.state_dict()))
    tensors, weights = first.tensor_state(), first.saved_tensors(model_a)
    assert tensors and all(key.split("/")[0] in ("ipt", "exp_avg_ipt", "exp_avg_unc")
                           for key in tensors)
    second, model_b, optimizer_b = _adalora_model(vit_weights, len(batches))
    second.load_state_dict(state)
    second.load_tensor_state(tensors)
    second.load_saved(model_b, weights)
    optimizer_b.load_state_dict(optimizer_a.state_dict())
    _adalora_steps(second, model_b, optimizer_b, batches[2:])
    assert second.ranks() == ranks
    resumed, uninterrupted = second.saved_tensors(model_b), strategy.saved_tensors(model)
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), name


def test_adalora_run_resumes_saves_its_ranks_and_reloads_to_them(tmp_path):
    from conftest import write_colour_folder  # noqa: I001 - the tests' own helper module
    from safetensors.torch import load_file

    from adaptlab.config import RunConfig
    from adaptlab.run import run
    from adaptlab.run_loading import load_run

    data = write_colour_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "adalora"
    holder = {}

    def stop_at_step_3(event):
        if event["event"] == "step" and event["global_step"] == 3:
            holder["trainer"].request_stop()

    config = RunConfig(domain="wildlife", data=str(data), strategy="adalora", out=str(out),
                       device="cpu", epochs=2, image_size=32, batch_size=2, lr=3e-3,
                       strategy_options={"r": 4, "target_r": 2})
    run(config, progress=False, subscribers=[stop_at_step_3],
        on_trainer=lambda trainer: holder.setdefault("trainer", trainer))
    checkpoints = out / "checkpoints"
    checkpoint = checkpoints / (checkpoints / "latest").read_text().strip()
    state = json.loads((checkpoint / "state.json").read_text())["strategy"]
    assert state["optimizer_steps"] == 3 and state["rank_pattern"]  # ranks cut from step 1
    assert any(k.startswith("exp_avg_ipt/")
               for k in load_file(str(checkpoint / "strategy.safetensors")))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = run(RunConfig(domain="wildlife", out=str(out)), resume=True, progress=False,
                      on_trainer=lambda trainer: holder.__setitem__("trainer", trainer))
    strategy = holder["trainer"].strategy
    # Layers cut to no rank save empty along their rank, which peft's save would report as
    # ungathered shards: that warning does not reach the user.
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert any(t.shape[0] == 0 for n, t in adapter.items() if ".lora_A" in n)
    assert not [w for w in caught if "have invalid shape" in str(w.message)]
    assert strategy.optimizer_steps == resumed.costs["optimizer_steps"]
    # The allocator's last pattern (the last checkpoint's) meets the budget of 2 per layer.
    last = json.loads((checkpoints / (checkpoints / "latest").read_text().strip()
                       / "state.json").read_text())["strategy"]["rank_pattern"]
    assert 0 < sum(sum(kept) for kept in last.values()) <= 2 * len(last)
    # The adapter keeps the ranks of the weights the run ended on: the last epoch's, or the
    # best epoch's when that one is restored (then possibly above the budget, as trained).
    ranks = strategy.ranks()
    if resumed.metrics["best_epoch"] == resumed.metrics["epochs_run"]:
        assert sorted(ranks.values()) == sorted(sum(kept) for kept in last.values())
    saved = json.loads((out / "adapter" / "adapter_config.json").read_text())["rank_pattern"]
    assert sorted(sum(kept) for kept in saved.values()) == sorted(ranks.values())
    # The reload (whose round trip the run checked) keeps the same ranks: the dropped
    # singular values are exactly zero.
    loaded = load_run(out, device="cpu", with_data=False)
    reloaded = {name: int((param != 0).sum()) for name, param in
                loaded.model.named_parameters() if ".lora_E." in name}
    assert sorted(reloaded.values()) == sorted(ranks.values())


def test_vera_run_is_refused_before_its_folder_exists(tmp_path, colour_folder):
    from adaptlab.config import RunConfig
    from adaptlab.run import run

    out = tmp_path / "vera"
    config = RunConfig(domain="wildlife", data=str(colour_folder), strategy="vera",
                       out=str(out), device="cpu", epochs=1, image_size=48)
    with pytest.raises(AdaptlabError, match="^strategy 'vera': applies to Linear layers"):
        run(config, progress=False)
    assert not out.exists()
