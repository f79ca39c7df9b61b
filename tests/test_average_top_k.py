"""``average_top_k``: a run ends on the average of its k best validation epochs' weights when
validation does not say the average is worse, else on the best epoch, as a run without it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import write_colour_folder


def _events(run_dir, name):
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == name]


@pytest.mark.parametrize("strategy", ["head", "lora"])
def test_average_of_the_top_epochs_against_the_best_epoch(tmp_path, strategy):
    from adaptlab.config import RunConfig
    from adaptlab.run import run
    from adaptlab.run_loading import load_run

    data = write_colour_folder(tmp_path / "data", per_class=10)

    def train(name, **extra):
        config = RunConfig(domain="wildlife", data=str(data), strategy=strategy,
                           out=str(tmp_path / name), device="cpu", epochs=4, image_size=64,
                           batch_size=8, lr=3e-3, seed=1, **extra)
        return run(config, progress=False).run_dir

    plain, averaged = train("plain"), train("averaged", average_top_k=3)
    history = json.loads((plain / "metrics.json").read_text())["history"]
    same = json.loads((averaged / "metrics.json").read_text())["history"]
    assert [h["val"] for h in history] == [h["val"] for h in same]  # the same trajectory
    monitor = json.loads((plain / "metrics.json").read_text())["monitor"]
    # The three best validation epochs, read from the plain run's history (ties: earlier).
    scored = sorted(((h["val"][monitor], h["epoch"]) for h in history),
                    key=lambda s: (-s[0], s[1]))
    expected_epochs = [epoch for _, epoch in scored[:3]]
    (event,) = _events(averaged, "average_top_k")
    assert event["epochs"] == expected_epochs
    best_val = scored[0][0]
    assert event["best_val"] == pytest.approx(best_val)
    # Each run as it reloads from its folder, compared by its outputs on one fixed batch
    # (a state dict also holds parts no forward uses, drawn afresh at each reload); the
    # expected average is loaded the way any saved tensors are, into the plain run's model.
    top = averaged / "checkpoints" / "top"
    kept = [load_file(str(top / f"epoch-{e}.safetensors")) for e in expected_epochs]
    batch = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def outputs(model):
        with torch.no_grad():
            return model.eval()(batch)

    final = outputs(load_run(averaged, with_data=False).model)
    reference = load_run(plain, with_data=False)
    plain_final = outputs(reference.model)
    if event["kept"]:
        assert event["val"] >= best_val
        mean = {name: torch.stack([k[name].double() for k in kept]).mean(0).to(tensor.dtype)
                if tensor.is_floating_point() else tensor for name, tensor in kept[0].items()}
        reference.strategy.load_saved(reference.model, mean)
        torch.testing.assert_close(final, outputs(reference.model), rtol=0, atol=1e-5)
        assert not torch.allclose(final, plain_final, atol=1e-5)
    else:
        assert event["val"] < best_val
        torch.testing.assert_close(final, plain_final, rtol=0, atol=0)
    assert sorted(p.name for p in (averaged / "checkpoints" / "top").iterdir()) == \
        sorted(f"epoch-{e}.safetensors" for e in expected_epochs)


def test_average_top_k_is_checked(tmp_path):
    from adaptlab.config import RunConfig
    from adaptlab.errors import AdaptlabError

    config = RunConfig(domain="wildlife", epochs=1)
    with pytest.raises(AdaptlabError, match="average_top_k"):
        config.with_overrides(["average_top_k=0"], set())
