"""Weight soups: a soup of one run repeated is that run, a uniform soup holds the mean of its
ingredients' saved tensors (computed here from their files), greedy never scores below its
best ingredient on validation, the soup folder reloads and lists like a run, and ingredients
from another start or other data are refused by name with nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from adaptlab.errors import AdaptlabError
from adaptlab.soups import make_soup
from conftest import run_cli, scratch_dir, write_colour_folder

ADAPTER = Path("adapter") / "adapter_model.safetensors"
WEIGHTS = Path("weights.safetensors")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two LoRA and two full fine-tunes of one backbone on one data folder, from one seed
    (one split, one head start) with different learning rates: the hyperparameter variation
    the model-soups recipe averages over."""
    from adaptlab.config import RunConfig
    from adaptlab.run import run

    with scratch_dir(tmp_path_factory, "soups") as root:
        data = write_colour_folder(root / "data", per_class=8)
        found = {}
        for name, strategy, lr in (("lora_a", "lora", 3e-3), ("lora_b", "lora", 1e-3),
                                   ("full_a", "full", 3e-3), ("full_b", "full", 1e-3)):
            config = RunConfig(domain="wildlife", data=str(data), strategy=strategy,
                               device="cpu", epochs=2, image_size=64, batch_size=8, lr=lr,
                               seed=0, out=str(root / name))
            found[name] = run(config, progress=False).run_dir
        yield found


def _tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / (ADAPTER if (run_dir / ADAPTER).is_file() else WEIGHTS)))


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def _nothing_written(out: Path) -> bool:
    return not out.exists() and not any(p.name.startswith(f".{out.name}.")
                                        for p in out.parent.iterdir())


def test_a_soup_of_one_run_repeated_is_that_run(runs, tmp_path):
    run_dir = runs["lora_a"]
    soup = make_soup([run_dir, run_dir], tmp_path / "soup", device="cpu")
    own, souped = _tensors(run_dir), _tensors(soup)
    assert set(souped) == set(own)
    for key, tensor in own.items():
        assert souped[key].dtype == tensor.dtype, key
        assert torch.equal(souped[key], tensor), key
    run_metrics = json.loads((run_dir / "metrics.json").read_text())["final"]
    soup_metrics = json.loads((soup / "metrics.json").read_text())["final"]
    for split in ("train", "val", "test"):
        assert _scalars(soup_metrics[split]) == pytest.approx(_scalars(run_metrics[split]),
                                                              abs=1e-6), split


@pytest.mark.parametrize("names", [("lora_a", "lora_b"), ("full_a", "full_b")])
def test_a_uniform_soup_holds_the_mean_of_the_saved_tensors(runs, tmp_path, names):
    dirs = [runs[n] for n in names]
    soup = make_soup(dirs, tmp_path / "soup", device="cpu")
    ingredients = [_tensors(d) for d in dirs]
    souped = _tensors(soup)
    assert set(souped) == set(ingredients[0])
    differing = 0
    for key, first in ingredients[0].items():
        if first.is_floating_point():
            expected = (first.double() + ingredients[1][key].double()) / 2
            torch.testing.assert_close(souped[key].double(), expected, rtol=1e-6, atol=1e-7)
            differing += not torch.equal(first, ingredients[1][key])
        else:  # integer buffers (BatchNorm's num_batches_tracked): the first run's
            assert torch.equal(souped[key], first), key
    assert differing > 0  # the runs really differ, so the mean is not either of them
    recipe = json.loads((soup / "soup.json").read_text())
    assert recipe["method"] == "uniform"
    assert recipe["kept"] == [str(d) for d in dirs]
    assert [entry["run"] for entry in recipe["ingredients"]] == [str(d) for d in dirs]


@pytest.fixture(scope="module")
def greedy(runs, tmp_path_factory) -> tuple[Path, str]:
    """A greedy LoRA soup made through the command line, the weaker run given first:
    (folder, what it printed)."""
    import contextlib
    import io

    from adaptlab.cli import main

    out = tmp_path_factory.mktemp("greedy") / "soup"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["soup", str(runs["lora_b"]), str(runs["lora_a"]), "--greedy",
                     "--out", str(out), "--device", "cpu"])
    printed = printed.getvalue()
    assert code == 0
    return out, printed


def test_greedy_never_scores_below_its_best_ingredient_on_validation(runs, greedy):
    soup, printed = greedy
    recipe = json.loads((soup / "soup.json").read_text())
    metrics = json.loads((soup / "metrics.json").read_text())
    monitor = metrics["monitor"]
    recorded = {str(runs[n]): json.loads((runs[n] / "metrics.json").read_text())["final"]["val"][monitor]
                for n in ("lora_a", "lora_b")}
    assert recipe["method"] == "greedy"
    # Each ingredient's score is its own validation score, as its run recorded it.
    assert {e["run"]: e["val"] for e in recipe["ingredients"]} == pytest.approx(recorded)
    assert recorded[recipe["kept"][0]] == max(recorded.values())  # ranked best first
    assert set(recipe["kept"]) <= set(recorded)
    assert recipe["val"] == pytest.approx(metrics["final"]["val"][monitor])
    assert recipe["val"] >= max(recorded.values()) - 1e-9
    assert f"soup folder: {soup}" in printed
    assert f"val {monitor} {recipe['val']:.4f}" in printed


def test_the_soup_folder_reloads_and_lists_like_a_run(runs, greedy, capsys):
    from adaptlab.compare import find_runs, summarise_run
    from adaptlab.run_loading import load_run
    from adaptlab.tasks.registry import make_task

    soup, _ = greedy
    loaded = load_run(soup, device="cpu")
    metrics = json.loads((soup / "metrics.json").read_text())
    assert loaded.config.out == str(soup) and loaded.config.strategy == "lora"
    task = make_task(loaded.data, loaded.config.class_weighting, loaded.backbone,
                     loaded.config.forecast_loss)
    from torch.utils.data import DataLoader

    from adaptlab.data.torch_datasets import make_torch_dataset

    dataset = make_torch_dataset(loaded.data, "test", loaded.backbone, False,
                                 {"image_size": loaded.config.image_size})
    again = task.evaluate(loaded.model, DataLoader(dataset, batch_size=8,
                                                   collate_fn=getattr(dataset, "collate", None)))
    assert _scalars(again) == pytest.approx(_scalars(metrics["final"]["test"]), abs=1e-6)
    predictions = loaded.predict(split="test", out=soup / "predictions")
    assert predictions.count == metrics["split_sizes"]["test"]

    summary = summarise_run(soup)
    assert summary.status == "finished" and summary.strategy == "lora"
    assert summary.target_metric == pytest.approx(metrics["final"]["test"][metrics["monitor"]])
    lora_costs = json.loads((runs["lora_a"] / "costs.json").read_text())
    assert summary.trainable_params == lora_costs["trainable_params"]
    assert summary.seconds_per_epoch is None  # no epoch ran; the table shows "-"
    costs = json.loads((soup / "costs.json").read_text())
    assert costs["reload_max_abs_diff"] <= 1e-5 and costs["ingredients_training_seconds"] > 0
    assert soup in find_runs(soup.parent)
    code, out, _ = run_cli(["compare", str(soup)], capsys)
    assert code == 0 and soup.name in out


def _copy_run(source: Path, target: Path, **changes) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, **changes}))
    return target


def test_refused_ingredients_are_named_and_nothing_is_written(runs, tmp_path):
    out = tmp_path / "soup"
    lora_a = runs["lora_a"]
    cases = [
        ([lora_a, _copy_run(lora_a, tmp_path / "vit", backbone="vit_small_patch16_224")],
         f"{tmp_path / 'vit'}: backbone 'vit_small_patch16_224' differs from {lora_a}'s "
         "'efficientnet_lite0'"),
        ([lora_a, runs["full_a"]], f"{runs['full_a']}: strategy 'full' differs"),
        ([lora_a, _copy_run(lora_a, tmp_path / "rank4", strategy_options={"r": 4})],
         f"{tmp_path / 'rank4'}: strategy option r 4 differs"),
        ([lora_a, _copy_run(lora_a, tmp_path / "seed1", seed=1)],
         f"{tmp_path / 'seed1'}: its val split differs"),
    ]
    for run_dirs, message in cases:
        with pytest.raises(AdaptlabError) as caught:
            make_soup(run_dirs, out, device="cpu")
        assert message in str(caught.value)
        assert _nothing_written(out)


def test_a_run_missing_a_tensor_or_unfinished_is_refused(runs, tmp_path):
    out = tmp_path / "soup"
    cut = _copy_run(runs["full_a"], tmp_path / "cut")
    tensors = load_file(str(cut / WEIGHTS))
    dropped = sorted(tensors)[0]
    save_file({k: v for k, v in tensors.items() if k != dropped}, str(cut / WEIGHTS))
    with pytest.raises(AdaptlabError, match=f"{cut}: saved tensor '{dropped}' is missing"):
        make_soup([runs["full_a"], cut], out, device="cpu")
    assert _nothing_written(out)

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(runs["lora_a"] / "config.json", unfinished / "config.json")
    with pytest.raises(AdaptlabError, match=f"{unfinished} is not a finished run "
                                            r"\(metrics.json missing\)"):
        make_soup([runs["lora_a"], unfinished], out)
    assert _nothing_written(out)


def test_an_out_folder_that_holds_anything_is_refused(runs, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(["soup", str(runs["lora_a"]), "--out", str(out)], capsys)
    assert code == 2
    assert f"--out {out}: folder exists and is not empty" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    with pytest.raises(AdaptlabError, match="inside the ingredient run"):
        make_soup([runs["lora_a"]], runs["lora_a"] / "soup")
    assert not (runs["lora_a"] / "soup").exists()


def test_runs_of_another_seed_need_the_same_split_and_the_same_starting_weights(runs, tmp_path):
    """Different seeds are fine where the data comes split and the backbone is pre-trained;
    a backbone initialised from the seed (built-in networks) is another start."""
    from adaptlab.assembly import build_backbone, load_data
    from adaptlab.backbones.backbone import seeded_init
    from adaptlab.config import RunConfig
    from adaptlab.plugins.registry import get_domain
    from adaptlab.soups.average import check_seeded_start, read_ingredient, weights_fingerprint

    split = tmp_path / "split"
    for index, name in enumerate(("train", "val", "test")):
        write_colour_folder(split / name, per_class=3, seed=index)
    first = _copy_run(runs["lora_a"], tmp_path / "a", data=str(split))
    other = _copy_run(runs["lora_a"], tmp_path / "b", data=str(split), seed=1)
    ingredients = [read_ingredient(first), read_ingredient(other)]
    config = RunConfig.from_file(first / "config.json")
    data = load_data(config, get_domain("wildlife"))
    start = weights_fingerprint(build_backbone(config, get_domain("wildlife"), data).module)
    check_seeded_start(ingredients, data, start)  # same split, same pre-trained weights

    def seeded(seed: int) -> torch.nn.Module:
        return seeded_init(lambda: torch.nn.Linear(4, 3), {"init_seed": seed})

    assert weights_fingerprint(seeded(0)) == weights_fingerprint(seeded(0))
    assert weights_fingerprint(seeded(0)) != weights_fingerprint(seeded(1))
    with pytest.raises(AdaptlabError, match=f"{other}: its backbone starts from other weights"):
        check_seeded_start(ingredients, data, weights_fingerprint(seeded(0)))


def test_the_comparison_view_makes_a_soup_of_the_picked_runs(runs, tmp_path):
    """"Make soup" on two picked runs: the soup folder beside them, the same tensors as the
    command line's uniform soup of those runs, and the soup listed in the view."""
    import asyncio

    from adaptlab.soups import make_soup
    from adaptlab.widgets.compare_view import ComparisonView

    picked = [runs["full_a"], runs["full_b"]]
    view = ComparisonView(runs=[*picked, runs["lora_a"]])
    view.picker.value = tuple(str(p) if isinstance(view.picker.options[0][1], str) else p
                              for p in picked)
    out = tmp_path / "from-view"
    soup = asyncio.run(view.make_soup(greedy=False, out=out))
    assert soup == out and "uniform, 2 of 2 runs kept" in view.soup_panel.message_text
    reference = make_soup(picked, tmp_path / "from-cli")
    made, expected = _tensors(soup), _tensors(reference)
    assert made.keys() == expected.keys()
    assert all(torch.equal(made[k], expected[k]) for k in made)
    assert Path(soup) in [Path(s.run_dir) for s in view.summaries]
    # Fewer than two picked runs: refused by the panel, nothing made.
    view.picker.value = view.picker.value[:1]
    assert view.soup_panel.start() is None and "at least two" in view.soup_panel.message_text
