"""Each strategy trains exactly the parameters it claims; LoRA adapters round-trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adaptlab.backbones.layer_map import layer_map_from_hf_encoder
from adaptlab.backbones.offline import efficientnet_lite0
from adaptlab.backbones.timm_backbones import timm_backbone
from adaptlab.errors import AdaptlabError
from adaptlab.strategies.base import count_parameters
from adaptlab.strategies.registry import get_strategy_class
from adaptlab.tasks.classification import build_model


@pytest.fixture(scope="module")
def lite0_backbone():
    return efficientnet_lite0()


def _prepared(backbone, strategy_name, **options):
    strategy = get_strategy_class(strategy_name).from_options(options)
    model, layer_map = build_model(backbone, 4, strategy.config)
    strategy.check(layer_map)
    return strategy.setup(model, layer_map), model, layer_map, strategy


def test_full_trains_everything(lite0_backbone):
    import copy

    trained, model, _, _ = _prepared(copy.deepcopy(lite0_backbone), "full")
    trainable, total = count_parameters(trained)
    assert trainable == total == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_head_trains_only_the_new_head(lite0_backbone, head):
    import copy

    trained, model, _, _ = _prepared(copy.deepcopy(lite0_backbone), "head", head=head,
                                     head_hidden=32)
    features = lite0_backbone.num_features
    expected = features * 4 + 4 if head == "linear" else features * 32 + 32 + 32 * 4 + 4
    assert count_parameters(trained)[0] == expected
    assert all(not p.requires_grad for p in model.backbone.parameters())


@pytest.mark.parametrize("k", [0, 5, -2, 16])
def test_freeze_bottom_k_blocks(lite0_backbone, k):
    import copy

    trained, model, _, _ = _prepared(copy.deepcopy(lite0_backbone), "freeze", k=k)
    # Expected from the network itself, not from the layer map freezing reads: the stem, then
    # the inverted-residual blocks in forward order (negative k counts from the top), and
    # conv_head/bn2 only once every block is frozen.
    blocks = [f"backbone.blocks.{s}.{i}." for s, stage in enumerate(lite0_backbone.module.blocks)
              for i in range(len(stage))]
    count = k if k >= 0 else len(blocks) + k
    prefixes = ("backbone.conv_stem.", "backbone.bn1.", *blocks[:count])
    if count == len(blocks):
        prefixes += ("backbone.conv_head.", "backbone.bn2.")
    expected = {name for name, _ in model.named_parameters() if name.startswith(prefixes)}
    frozen = {name for name, p in trained.named_parameters() if not p.requires_grad}
    assert frozen == expected
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(trained)[0] == total - sum(
        p.numel() for name, p in model.named_parameters() if name in expected)


def test_freeze_refuses_k_beyond_the_block_count(lite0_backbone):
    # The blocks are the network's inverted-residual blocks, counted from the network itself
    # (16); conv_head and bn2 after them are the neck, not a block.
    blocks = sum(len(stage) for stage in lite0_backbone.module.blocks)
    assert blocks == 16
    model, layer_map = build_model(lite0_backbone, 4)
    get_strategy_class("freeze").from_options({"k": blocks}).check(layer_map)  # all: allowed
    strategy = get_strategy_class("freeze").from_options({"k": blocks + 1})
    with pytest.raises(AdaptlabError, match=f"k={blocks + 1} is out of range for a backbone "
                                            f"with {blocks} blocks"):
        strategy.check(layer_map)


def test_lora_trains_adapters_head_and_batchnorm_only():
    backbone = efficientnet_lite0()
    plan = get_strategy_class("lora").from_options({"r": 4}).plan(
        *build_model(efficientnet_lite0(), 4))
    trained, model, layer_map, strategy = _prepared(backbone, "lora", r=4, alpha=8)
    names = [n for n, p in trained.named_parameters() if p.requires_grad]
    assert names and all(("lora_" in n) or ("modules_to_save" in n) for n in names)
    # Independent count: r*in*k*k + r*out per wrapped conv, plus the head and every BatchNorm.
    expected = 0
    for name, module in trained.base_model.model.named_modules():
        if name in plan["target_modules"]:
            base = module.base_layer
            expected += 4 * base.in_channels * base.kernel_size[0] * base.kernel_size[1]
            expected += 4 * base.out_channels
    saved = [m for m in efficientnet_lite0().module.modules() if isinstance(m, nn.BatchNorm2d)]
    expected += sum(p.numel() for m in saved for p in m.parameters())
    expected += backbone.num_features * 4 + 4
    assert count_parameters(trained)[0] == expected


def test_lora_adapter_round_trip_matches_logits(tmp_path):
    from adaptlab.strategies.roundtrip import check_round_trip

    torch.manual_seed(0)
    backbone = efficientnet_lite0()
    trained, _, _, strategy = _prepared(backbone, "lora", r=4)
    # Move adapter, head and BatchNorm statistics away from their initial values, as
    # training does, so the check cannot pass on untouched weights.
    trained.train()
    optimizer = torch.optim.SGD([p for p in trained.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(4, 3, 64, 64)
    for _ in range(2):
        loss = trained(x).logsumexp(1).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    def fresh():
        return build_model(efficientnet_lite0(), 4)

    strategy.save_final(trained, tmp_path)
    assert check_round_trip(trained, strategy, tmp_path, fresh, x) < 1e-5
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    # peft alone (a user without adaptlab's strategies) reloads the same logits. It reads the
    # saved adapter_config.json, which check_round_trip never does (it rebuilds the config
    # through the strategy): a saved config that disagrees with the trained adapter shows here.
    from peft import PeftConfig, PeftModel, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    reloaded = PeftModel.from_pretrained(fresh()[0], str(tmp_path / "adapter")).eval()
    trained.eval()
    with torch.no_grad():
        assert (trained(x) - reloaded(x)).abs().max().item() < 1e-5
    # The match above rests on the saved head and BatchNorm layers: the LoRA tensors alone,
    # in a fresh model, do not reproduce the logits.
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    lora_only = {k: v for k, v in saved.items() if "lora_" in k}
    assert len(lora_only) < len(saved)
    config = PeftConfig.from_pretrained(str(tmp_path / "adapter"))
    config.modules_to_save = None
    bare = get_peft_model(fresh()[0], config).eval()
    assert not set_peft_model_state_dict(bare, lora_only).unexpected_keys
    with torch.no_grad():
        assert (trained(x) - bare(x)).abs().max().item() > 1e-3


def test_lora_refuses_illegal_plans():
    backbone = efficientnet_lite0()
    model, layer_map = build_model(backbone, 4)
    with pytest.raises(AdaptlabError, match="is a BatchNormAct2d"):
        get_strategy_class("lora").from_options({"targets": "backbone.bn1"}).plan(model, layer_map)
    with pytest.raises(AdaptlabError, match="is not a module"):
        get_strategy_class("lora").from_options({"targets": "backbone.nope"}).plan(model,
                                                                                  layer_map)
    with pytest.raises(AdaptlabError, match="r=0 is below the minimum 1"):
        get_strategy_class("lora").from_options({"r": 0})


def test_layer_maps_for_timm_vit_and_hf_encoder():
    vit = timm_backbone("test_vit", pretrained=False)
    # One block per transformer block the model holds (layer_map_from_timm itself only
    # refuses fewer than one).
    assert vit.layer_map.blocks == [[f"blocks.{i}"] for i in range(len(vit.module.blocks))]
    trained, model, layer_map, _ = _prepared(vit, "lora", r=2)
    from peft.tuners.lora import LoraLayer

    wrapped = [n for n, m in trained.named_modules() if isinstance(m, LoraLayer)]
    assert any(n.endswith("blocks.0.attn.qkv") for n in wrapped)
    assert not any("patch_embed" in n for n in wrapped)  # the stem stays out of the plan

    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3,
                                num_attention_heads=2, intermediate_size=32))
    hf_map = layer_map_from_hf_encoder(bert)
    assert hf_map.embeddings == ["embeddings"]
    assert hf_map.blocks == [["encoder.layer.0"], ["encoder.layer.1"], ["encoder.layer.2"]]


def _one_step_moves_statistics(trained, strategy) -> tuple[set[str], set[str], bool]:
    """One SGD step on inputs far from ImageNet's statistics: (BatchNorm layers whose running
    statistics moved, those whose weights train, whether any such weight changed)."""
    norms = {n: m for n, m in trained.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    stats = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in norms.items()}
    weights = {n: m.weight.detach().clone() for n, m in norms.items() if m.weight.requires_grad}
    trained.train()
    strategy.train_mode(trained)
    optimizer = torch.optim.SGD([p for p in trained.parameters() if p.requires_grad], lr=0.1)
    inputs = torch.randn(8, 3, 64, 64) * 3 + 2
    nn.functional.cross_entropy(trained(inputs), torch.arange(8) % 4).backward()
    optimizer.step()
    moved = {n for n, m in norms.items()
             if not (torch.equal(m.running_mean, stats[n][0])
                     and torch.equal(m.running_var, stats[n][1]))}
    changed = any(not torch.equal(norms[n].weight.detach(), w) for n, w in weights.items())
    return moved, set(weights), changed


@pytest.mark.parametrize("name", ["lora", "full", "slimfit"])
@pytest.mark.parametrize("norm_stats", ["update", "keep", "auto"])
def test_norm_stats_decides_whether_pretrained_batch_norm_statistics_move(lite0_backbone, name,
                                                                          norm_stats):
    import copy

    torch.manual_seed(0)
    trained, _, _, strategy = _prepared(copy.deepcopy(lite0_backbone), name,
                                        norm_stats=norm_stats)
    moved, training, changed = _one_step_moves_statistics(trained, strategy)
    assert training and changed, f"{name}: no BatchNorm weight trained"
    if norm_stats == "update":
        # Every layer that trained normalised by the batch and moved its statistics.
        assert training <= moved
    else:  # auto keeps the pre-trained backbone's statistics, as keep does
        assert moved == set()


def test_norm_stats_auto_updates_statistics_a_layer_has_not_learned(lite0_backbone):
    import copy

    torch.manual_seed(0)
    scratch = copy.deepcopy(lite0_backbone)
    for module in scratch.module.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
    trained, _, _, strategy = _prepared(scratch, "full")
    moved, training, _ = _one_step_moves_statistics(trained, strategy)
    assert training <= moved  # nothing learned to keep: they normalise by their batches

    # A re-drawn top block starts over; the blocks below keep the pre-trained statistics.
    trained, model, layer_map, strategy = _prepared(copy.deepcopy(lite0_backbone), "full",
                                                    reinit_top=1)
    top = tuple(f"{prefix}." for prefix in layer_map.blocks[-1])
    moved, _, _ = _one_step_moves_statistics(trained, strategy)
    assert moved and all(name.startswith(top) for name in moved)


def test_a_run_recorded_before_norm_stats_replays_with_updated_statistics():
    from adaptlab.strategies.registry import recorded_strategy_options

    assert recorded_strategy_options("lora", {"r": 8})["norm_stats"] == "update"
    assert recorded_strategy_options("lst", {})["norm_stats"] == "update"
    assert recorded_strategy_options("lora", {"norm_stats": "auto"})["norm_stats"] == "auto"
