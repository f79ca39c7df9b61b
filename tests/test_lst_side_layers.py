"""How the ladder's rungs join the side network: after or before the side block shadowing the
backbone block (``tap_order``), and at which blocks (``side_layers``, the LST reference's layer
dropping). The expected outputs are computed here from the backbone's own hidden states
(Hugging Face's ``output_hidden_states``), not from the ladder's taps."""

from __future__ import annotations

import json

import pytest
import torch

from adaptlab.config import RunConfig
from adaptlab.costs.meter import SavedActivationCounter
from adaptlab.errors import AdaptlabError
from adaptlab.run import run
from adaptlab.strategies.registry import get_strategy_class
from conftest import write_colour_folder
from lst_models import prepared

pytestmark = pytest.mark.slow


def _by_the_formula(model, frozen, batch, kept: list[int], before: bool) -> torch.Tensor:
    """The task model's logits from the side's modules, composed as LST composes them, on
    the states Hugging Face reports for every layer (index 0: the embeddings' output)."""
    side = model.backbone.side
    states = frozen.encoder(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"]
    gates = torch.sigmoid(side.gate_alpha / 0.1)
    x = side.down[0](states[0])
    for position, index in enumerate(kept):
        rung = side.down[position + 1](states[index + 1])
        if before:
            x = side.blocks[position](gates[position] * x + (1 - gates[position]) * rung, mask)
        else:
            x = gates[position] * side.blocks[position](x, mask) + (1 - gates[position]) * rung
    x = side.norm(x)
    weights = mask.unsqueeze(-1).float()
    pooled = (x * weights).sum(1) / weights.sum(1)
    merge = torch.sigmoid(side.merge_alpha / 0.1)
    return model.task_head(merge * side.up(pooled) + (1 - merge) * frozen(**batch))


def _trained_looking(model) -> None:
    """Gates away from one half and a last gate off its start, so that every term counts."""
    side = model.backbone.side
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        side.gate_alpha.copy_(torch.randn(side.gate_alpha.shape, generator=generator) * 0.2)
        side.merge_alpha.fill_(0.05)


@pytest.mark.parametrize("tap_order", ["after", "before"])
def test_the_rungs_join_the_side_after_or_before_its_blocks(minilm_backbone, text_batch,
                                                              tap_order):
    model, frozen, _ = prepared(minilm_backbone, tap_order=tap_order)
    _trained_looking(model)
    model.eval()
    with torch.no_grad():
        got = model(text_batch)
        kept = list(range(len(frozen.encoder.encoder.layer)))
        assert torch.allclose(got, _by_the_formula(model, frozen, text_batch, kept,
                                                   tap_order == "before"), atol=1e-5)
        # The other order on the same weights gives other logits: the test tells them apart.
        assert not torch.allclose(got, _by_the_formula(model, frozen, text_batch, kept,
                                                       tap_order != "before"), atol=1e-3)


def test_dropped_layers_have_no_side_block_rung_or_gate(minilm_backbone, text_batch):
    kept = [1, 2, 3, 5]
    model, frozen, lst = prepared(minilm_backbone, side_layers="5,1,2,3", tap_order="before")
    every, _, _ = prepared(minilm_backbone, tap_order="before")
    side, whole = model.backbone.side, every.backbone.side
    assert len(side.blocks) == 4 and side.gate_alpha.shape == (4,) and len(side.down) == 5
    # The kept side blocks start where the full side's blocks at those indices start.
    for position, index in enumerate(kept):
        mine, theirs = side.blocks[position].state_dict(), whole.blocks[index].state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    dropped = (count(whole.blocks[0]) + count(whole.blocks[4]) + count(whole.down[1])
               + count(whole.down[5]) + 2)  # two blocks, their rungs, their gates
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for p in every.parameters() if p.requires_grad) - dropped

    _trained_looking(model)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(text_batch), _by_the_formula(
            model, frozen, text_batch, kept, before=True), atol=1e-5)

    # Fewer side blocks, fewer activations saved for backward.
    saved = {}
    for name, built in (("kept", model), ("every", every)):
        built.train()
        with SavedActivationCounter(built) as counter:
            built(text_batch).sum()
        saved[name] = counter.bytes
    assert saved["kept"] < saved["every"], saved

    # What a reload does: the recorded options (through JSON) rebuild the same structure,
    # and the saved tensors load into it to the same logits.
    strategy = get_strategy_class("lst")
    recorded = json.loads(json.dumps(strategy.resolved_options(
        {"side_layers": "5,1,2,3", "tap_order": "before"})))
    rebuilt, _, chosen = prepared(minilm_backbone, **recorded)
    chosen.load_saved(rebuilt, lst.saved_tensors(model))
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(text_batch), model(text_batch))


def test_bad_side_layers_and_orders_are_refused_by_value(minilm_backbone, tmp_path):
    for value, message in (("6", r"side_layers='6': block 6 is out of range: this backbone's "
                                 r"side shadows 6 blocks \(0\.\.5\)"),
                           ("1,1", r"side_layers='1,1': names a block twice"),
                           ("-1", r"side_layers='-1': block -1 is out of range"),
                           ("first", r"side_layers='first' is not 'all' or comma-separated")):
        with pytest.raises(AdaptlabError, match=message):
            prepared(minilm_backbone, side_layers=value)
    with pytest.raises(AdaptlabError, match=r"tap_order='middle' is not one of"):
        prepared(minilm_backbone, tap_order="middle")

    # A CNN's stages change width: its side keeps every stage, in the default order; refused
    # from the built model, before the run folder exists.
    data = write_colour_folder(tmp_path / "data", per_class=6)
    out = tmp_path / "refused"
    for options in ({"tap_order": "before"}, {"side_layers": "0,1"}):
        with pytest.raises(AdaptlabError, match=r"stages change width and resolution"):
            run(RunConfig(domain="wildlife", data=str(data), strategy="lst", out=str(out),
                          device="cpu", strategy_options=options), progress=False)
        assert not out.exists()
