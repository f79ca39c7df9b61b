"""Prompt strategies (vpt, dvpt, idpt): trainable parameters counted from the shapes, a frozen
backbone, prompts that change the output only through the prompt tokens (a zero-gated DVPT
and masked zero prompts give the frozen model; a prompted ViT equals its blocks run by hand
on the prompted sequence), reloads to the same logits, refusals by name, and one real run on
the point transformer, reloaded and explained."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from adaptlab.backbones.backbone import Backbone
from adaptlab.errors import AdaptlabError
from adaptlab.strategies.registry import get_strategy_class
from adaptlab.tasks.classification import build_model

pytestmark = pytest.mark.slow

CLASSES = 3
POINT_OPTIONS = {"num_points": 128, "patches": 16, "patch_size": 8, "dim": 32, "depth": 2,
                 "heads": 2}


# -- small backbones of the three families ---------------------------------------------------
@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """A small randomly initialised ViT-Tiny (32 px, 2 blocks) whose weights go through a
    local safetensors file, the path a user's own weights take (no pre-trained ViT installs
    offline)."""
    import timm
    from safetensors.torch import save_file

    from adaptlab.backbones.layer_map import layer_map_from_timm
    from adaptlab.backbones.timm_backbones import load_into
    from adaptlab.backbones.weights import load_state_dict_file

    shape = {"pretrained": False, "num_classes": 0, "img_size": 32, "depth": 2}
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", **shape)
    path = tmp_path_factory.mktemp("vit") / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    module = timm.create_model("vit_tiny_patch16_224", **shape)
    load_into(module, load_state_dict_file(path), by_position=False, source=str(path))
    for name, value in source.state_dict().items():
        assert torch.equal(module.state_dict()[name], value)
    return Backbone(name="vit_tiny", module=module, num_features=module.num_features,
                    layer_map=layer_map_from_timm(module), feature_layout="tokens")


@pytest.fixture(scope="module")
def bert():
    """A two-layer BERT, mean-pooled over its attention mask as MiniLM is."""
    from transformers import BertConfig, BertModel

    from adaptlab.backbones.hf_encoders import MeanPooledEncoder
    from adaptlab.backbones.layer_map import layer_map_from_hf_encoder

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    encoder = BertModel(config)
    return Backbone(name="tiny-bert", module=MeanPooledEncoder(encoder), num_features=32,
                    layer_map=layer_map_from_hf_encoder(encoder).prefixed("encoder"),
                    feature_layout="tokens")


@pytest.fixture(scope="module")
def points():
    from adaptlab.backbones.point_nets import point_transformer

    return point_transformer(POINT_OPTIONS)


def _inputs(family: str):
    generator = torch.Generator().manual_seed(1)
    if family == "vit":
        return torch.randn(2, 3, 32, 32, generator=generator)
    if family == "bert":
        ids = torch.randint(3, 100, (3, 9), generator=generator)
        mask = torch.ones_like(ids)
        mask[1, 6:] = 0  # padding: the mask matters
        mask[2, 4:] = 0
        return {"input_ids": ids * mask, "attention_mask": mask}
    return torch.randn(2, 128, 3, generator=generator)


@pytest.fixture(scope="module")
def backbones(vit, bert, points):
    return {"vit": vit, "bert": bert, "points": points}


def _prepared(backbone, strategy: str, **options):
    """(frozen task model, prompted task model, strategy): the same backbone weights and
    head, the second with ``strategy`` set up; both in eval mode."""
    chosen = get_strategy_class(strategy).from_options(options)
    frozen, layer_map = build_model(copy.deepcopy(backbone), CLASSES, chosen.config)
    prompted = copy.deepcopy(frozen)
    prompted = chosen.setup(prompted, layer_map)
    return frozen.eval(), prompted.eval(), chosen


# -- hand counts -------------------------------------------------------------------------------
def _shapes(family: str, backbone) -> tuple[int, int, int]:
    """(token width, blocks, pooled features) read from the backbone's own modules."""
    module = backbone.module
    if family == "vit":
        return module.embed_dim, len(module.blocks), module.num_features
    if family == "bert":
        config = module.encoder.config
        return config.hidden_size, config.num_hidden_layers, config.hidden_size
    return module.norm.normalized_shape[0], len(module.blocks), module.num_features


def _dvpt_module(width: int, r: int, queries: int) -> int:
    down, prompts, up, gate = width * r + r, queries * r, r * width + width, 1
    attention = 3 * r * r + 3 * r + r * r + r  # in-projection, out-projection
    return down + prompts + attention + up + gate


@pytest.mark.parametrize("family", ["vit", "bert", "points"])
@pytest.mark.parametrize(("strategy", "options"), [
    ("vpt", {"tokens": 5}), ("vpt", {"tokens": 3, "deep": True}),
    ("dvpt", {"queries": 4, "bottleneck": 8}),
    ("dvpt", {"queries": 4, "bottleneck": 8, "shared": True})])
def test_exactly_the_prompts_and_head_train(backbones, family, strategy, options):
    backbone = backbones[family]
    width, depth, pooled = _shapes(family, backbone)
    head = pooled * CLASSES + CLASSES
    if strategy == "vpt":
        expected = options["tokens"] * width * (depth if options.get("deep") else 1)
    else:
        modules = 1 if options.get("shared") else depth
        expected = modules * _dvpt_module(width, options["bottleneck"], options["queries"])
    _, prompted, _ = _prepared(backbone, strategy, **options)
    original = {id(p) for p in backbone.module.parameters()}
    trainable = [(n, p) for n, p in prompted.named_parameters() if p.requires_grad]
    assert sum(p.numel() for _, p in trainable) == expected + head
    assert all(n.startswith(f"backbone.{strategy}.") or n.startswith("task_head.")
               for n, _ in trainable)

    prompted.train()
    prompted(_inputs(family)).square().sum().backward()
    backbone_params = [p for n, p in prompted.named_parameters()
                       if not n.startswith((f"backbone.{strategy}.", "task_head."))]
    assert len(backbone_params) == len(original)
    assert all(p.grad is None and not p.requires_grad for p in backbone_params)
    prompt_params = [p for n, p in trainable if n.startswith(f"backbone.{strategy}.")]
    assert all(p.grad is not None for p in prompt_params)
    if strategy == "vpt":
        assert all(p.grad.abs().sum() > 0 for p in prompt_params)
    else:  # gated from zero: the gate moves first
        gates = [p for n, p in trainable if n.endswith(".gate")]
        assert gates and all(g.grad.abs().sum() > 0 for g in gates)


def test_idpt_counts_its_edgeconv_generator(points):
    width, _, pooled = _shapes("points", points)
    k, hidden = 6, 12
    edge = [2 * width * hidden + 2 * hidden] + [2 * hidden * hidden + 2 * hidden] * 2
    expected = sum(edge) + 3 * hidden * width + width + pooled * CLASSES + CLASSES
    frozen, prompted, _ = _prepared(points, "idpt", k=k, hidden=hidden)
    assert sum(p.numel() for p in prompted.parameters() if p.requires_grad) == expected
    x = _inputs("points")
    with torch.no_grad():
        assert not torch.allclose(prompted(x), frozen(x))  # the prompt reaches the output
        # Per-point features (what segmentation reads) keep their shape and see the prompt.
        features = prompted.backbone.forward_features(x)
        assert features.shape == frozen.backbone.forward_features(x).shape
        assert not torch.allclose(features, frozen.backbone.forward_features(x))
    # One instance-aware prompt before the last block: the blocks below see no extra token.
    seen = []
    for block in prompted.backbone.blocks:
        block.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
    with torch.no_grad():
        prompted(x)
    assert seen == [POINT_OPTIONS["patches"], POINT_OPTIONS["patches"] + 1]


# -- prompts change the output only through the prompt tokens ---------------------------------
@pytest.mark.parametrize("deep", [False, True])
def test_vit_output_is_its_blocks_run_on_the_prompted_sequence(vit, deep):
    """The expected output is computed here from the unprompted ViT's own parts: prompts
    after the class token, fresh ones at each block's input when deep, removed before the
    final norm and the class-token pooling."""
    frozen, prompted, _ = _prepared(vit, "vpt", tokens=4, deep=deep)
    tokens = prompted.backbone.vpt.tokens.detach()
    # Whoever reads a block's output sees the ViT's own tokens: prompts are carried past.
    seen = []
    for block in prompted.backbone.blocks:
        block.register_forward_hook(lambda _m, _a, out: seen.append(out.shape[1]))
    model = frozen.backbone
    image = _inputs("vit")
    with torch.no_grad():
        x = model.norm_pre(model._pos_embed(model.patch_embed(image)))
        cls, patches, carried = x[:, :1], x[:, 1:], None
        for index, block in enumerate(model.blocks):
            prompt = tokens[index if deep else 0].expand(len(image), -1, -1)
            if index > 0 and not deep:
                prompt = carried  # shallow: the prompts' outputs go on to the next block
            out = block(torch.cat([cls, prompt, patches], dim=1))
            cls, carried, patches = out[:, :1], out[:, 1:5], out[:, 5:]
        pooled = model.forward_head(model.norm(torch.cat([cls, patches], dim=1)),
                                    pre_logits=True)
        expected = frozen.task_head(pooled)
        torch.testing.assert_close(prompted(image), expected, rtol=1e-5, atol=1e-5)
        assert seen == [1 + (32 // 16) ** 2] * len(model.blocks)
        assert not torch.allclose(prompted(image), frozen(image), atol=1e-3)


@pytest.mark.parametrize("deep", [False, True])
def test_bert_with_zero_prompts_masked_out_is_the_frozen_model(bert, deep):
    frozen, prompted, strategy = _prepared(bert, "vpt", tokens=4, deep=deep)
    inputs = _inputs("bert")
    with torch.no_grad():
        assert not torch.allclose(prompted(inputs), frozen(inputs), atol=1e-4)
        prompted.backbone.vpt.tokens.zero_()

    def mask_prompts(_module, args, kwargs):  # runs after the strategy's own mask hook
        mask = kwargs["attention_mask"].clone()
        assert mask.shape[1] == inputs["attention_mask"].shape[1] + 4
        mask[:, 1:5] = 0
        return args, {**kwargs, "attention_mask": mask}

    prompted.backbone.encoder.register_forward_pre_hook(mask_prompts, with_kwargs=True)
    with torch.no_grad():
        torch.testing.assert_close(prompted(inputs), frozen(inputs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["vit", "bert", "points"])
def test_zero_gated_dvpt_is_exactly_the_frozen_model(backbones, family):
    frozen, prompted, strategy = _prepared(backbones[family], "dvpt", queries=3, bottleneck=8)
    inputs = _inputs(family)
    with torch.no_grad():
        assert torch.equal(prompted(inputs), frozen(inputs))
        for module in prompted.backbone.dvpt.modules_per_block:
            module.gate.fill_(0.5)
        assert not torch.allclose(prompted(inputs), frozen(inputs), atol=1e-4)
        with strategy.unadapted(prompted, "task_head") as before:
            assert torch.equal(before(inputs), frozen(inputs))
        assert not torch.allclose(prompted(inputs), frozen(inputs), atol=1e-4)


def test_dvpt_on_bert_reads_no_padding(bert):
    """Queries attend to real tokens only: more padding leaves every output as it was."""
    _, prompted, _ = _prepared(bert, "dvpt", queries=3, bottleneck=8)
    with torch.no_grad():
        for module in prompted.backbone.dvpt.modules_per_block:
            module.gate.fill_(1.0)
        inputs = _inputs("bert")
        padded = {k: torch.cat([v, torch.zeros(len(v), 5, dtype=v.dtype)], dim=1)
                  for k, v in inputs.items()}
        torch.testing.assert_close(prompted(padded), prompted(inputs), rtol=1e-5, atol=1e-5)


# -- reload, copies, refusals -----------------------------------------------------------------
@pytest.mark.parametrize(("strategy", "options"), [
    ("vpt", {"tokens": 3, "deep": True}), ("dvpt", {"queries": 3, "bottleneck": 8}),
    ("idpt", {"k": 6, "hidden": 8})])
def test_saved_prompts_reload_to_the_same_logits(points, tmp_path, strategy, options):
    _, prompted, chosen = _prepared(points, strategy, **options)
    with torch.no_grad():  # stands in for training: every trainable tensor moves
        for p in prompted.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    chosen.save_final(prompted, tmp_path)
    torch.manual_seed(999)  # apply() builds the same modules whatever the global RNG says
    fresh, layer_map = build_model(copy.deepcopy(points), CLASSES, chosen.config)
    reloaded = chosen.apply(fresh, layer_map)
    chosen.load_final(reloaded, tmp_path)
    x = _inputs("points")
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(x), prompted(x))
        # A deep copy carries its own hooks: changing the copy leaves the original as it is.
        duplicate = copy.deepcopy(prompted)
        for p in getattr(duplicate.backbone, strategy).parameters():
            p.add_(torch.randn_like(p))
        assert torch.equal(prompted(x), reloaded(x))
        assert not torch.allclose(duplicate(x), prompted(x))
    with pytest.raises(AdaptlabError, match="cannot be folded into the base model"):
        chosen.merged_state_dict(prompted)


def _check_model(strategy: str, backbone, **options) -> None:
    chosen = get_strategy_class(strategy).from_options(options)
    model, layer_map = build_model(copy.deepcopy(backbone), CLASSES, chosen.config)
    chosen.check(layer_map)
    chosen.check_model(model, layer_map)


def test_refusals_name_the_backbone_the_families_and_the_option(vit, points):
    from adaptlab.backbones.point_nets import dgcnn

    cnn = dgcnn({"num_points": 128})
    for strategy in ("vpt", "dvpt"):
        with pytest.raises(AdaptlabError, match=rf"^strategy '{strategy}': backbone DGCNN has "
                           r"no token sequence it can prompt; families that work: timm-vit, "
                           r"hf-encoder, point-transformer$"):
            _check_model(strategy, cnn)
    with pytest.raises(AdaptlabError, match=r"^strategy 'idpt': backbone VisionTransformer .*"
                                            r"families that work: point-transformer$"):
        _check_model("idpt", vit)
    with pytest.raises(AdaptlabError, match=r"k=17 is more than the backbone's 16 patch tokens"):
        _check_model("idpt", points, k=17)
    with pytest.raises(AdaptlabError, match=r"tokens=0"):
        get_strategy_class("vpt").from_options({"tokens": 0})


# -- one real run on the point transformer ----------------------------------------------------
@pytest.fixture(scope="module")
def point_run(tmp_path_factory):
    """idpt on a small folder of generated shapes (scanned point files, 3 classes), 1 epoch."""
    from adaptlab.config import RunConfig
    from adaptlab.run import run
    from conftest import write_shape_folder  # the plugin is part of the install: never skips
    root = tmp_path_factory.mktemp("idpt")
    write_shape_folder(root / "data")
    config = RunConfig(domain="pointcloud", data=str(root / "data"),
                       backbone="point_transformer", strategy="idpt", out=str(root / "run"),
                       device="cpu", epochs=1, batch_size=4,
                       strategy_options={"k": 8, "hidden": 16})
    return run(config, progress=False)


def test_a_run_trains_the_generator_reloads_and_explains(point_run):
    from adaptlab import load_run
    from adaptlab.assembly import build_backbone
    from adaptlab.explain import explain
    from adaptlab.tasks.base import move_to

    costs = point_run.costs
    loaded = load_run(point_run.run_dir, device="cpu")
    width = loaded.backbone.module.norm.normalized_shape[0]
    generator = (2 * width * 16 + 32) + 2 * (2 * 16 * 16 + 32) + 3 * 16 * width + width
    head = loaded.backbone.num_features * CLASSES + CLASSES
    assert costs["trainable_params"] == generator + head
    assert costs["reload_max_abs_diff"] <= 1e-5
    saved = json.loads((point_run.run_dir / "config.json").read_text())
    assert saved["strategy"] == "idpt"

    batch = move_to(next(iter(_test_loader(loaded)))[0], "cpu")
    with torch.no_grad():
        adapted = loaded.model.eval()(batch)
        with loaded.unadapted() as before:
            unadapted = before(batch)
        fresh_backbone = build_backbone(loaded.config, loaded.domain, loaded.data)
        fresh, _ = build_model(fresh_backbone, CLASSES, loaded.strategy.config)
        fresh.task_head.load_state_dict(loaded.model.task_head.state_dict())
        assert torch.equal(unadapted, fresh.eval()(batch))
        assert not torch.equal(adapted, unadapted)

    # Captum's attributions over the input points, for the prompted and the unadapted model.
    explanation = explain(loaded, "saliency", 2, checks=False, report=False)
    assert explanation.result.method == "saliency"
    for maps in (explanation.result.features, explanation.unadapted_features):
        assert len(maps) == 2 and all(torch.isfinite(m).all() and m.abs().sum() > 0
                                      for m in maps)


def test_the_prompted_run_exports_with_its_prompt_generator(point_run, tmp_path):
    """idpt keeps its structure: a merge is refused before anything is written; the folder
    holds the generator, rebuilt from config.json, and with TorchScript gives the run's
    logits."""
    from export_checks import TOLERANCE, export_and_compare, held_out

    from adaptlab.export import export_run

    with pytest.raises(AdaptlabError, match="cannot be folded into the base model"):
        export_run(point_run.run_dir, tmp_path / "merged", merge=True)
    assert not (tmp_path / "merged").exists()
    reference = held_out(point_run.run_dir)
    check = export_and_compare(point_run.run_dir, tmp_path / "export", "torchscript", reference,
                               merge=False)
    assert check.config["adaptlab"]["strategy_structure"] is True
    assert check.differences["folder"] < TOLERANCE
    assert check.differences["torchscript"] < TOLERANCE


def _test_loader(loaded):
    from torch.utils.data import DataLoader

    from adaptlab.data.torch_datasets import make_torch_dataset

    dataset = make_torch_dataset(loaded.data, "test", loaded.backbone, False, {})
    return DataLoader(dataset, batch_size=4, collate_fn=getattr(dataset, "collate", None))
