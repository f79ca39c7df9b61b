"""``adaptlab sweep``: one ordinary run per K (or backbone, or learning rate) and seed, whose
rows are those runs' own numbers (and a separate ``adaptlab run``'s); trainable parameters that
fall as K grows; the value the validation split chooses; a sweep that continues instead of
retraining; bad input refused before anything is written."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import pytest
from safetensors.torch import load_file

from adaptlab.cli import main
from adaptlab.config import RunConfig
from adaptlab.run import run
from conftest import scratch_dir, write_colour_folder

SMALL = ["--epochs", "1", "--device", "cpu", "--set", "image_size=64", "--set", "batch_size=8", "--quiet"]
SPLITS = ("train", "val", "test")


def _sweep_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["sweep", "wildlife", "--data", str(data), "--strategy", "freeze", "--k", "0,L",
            "--seeds", "0,1", "--out", str(out), *SMALL, *extra]  # fmt: skip


def _scalars(split: dict) -> dict:
    return {k: v for k, v in split.items() if isinstance(v, int | float) and not isinstance(v, bool)}


@pytest.fixture(scope="module")
def k_sweep(tmp_path_factory):
    """K = 0 and K = L (16 blocks of EfficientNet-Lite0) at seeds 0 and 1: four runs."""
    with scratch_dir(tmp_path_factory, "sweep") as root:
        data = write_colour_folder(root / "data", per_class=6)
        out = root / "k"
        printed = io.StringIO()
        with redirect_stdout(printed):
            assert main(_sweep_args(data, out)) == 0
        yield SimpleNamespace(data=data, out=out, printed=printed.getvalue(),
                              result=json.loads((out / "sweep.json").read_text()))


@pytest.mark.slow
def test_rows_are_the_runs_own_metrics_and_a_separate_runs(k_sweep, tmp_path):
    result = k_sweep.result
    assert (result["domain"], result["varied"]) == ("wildlife", "k")
    assert result["values"] == [0, 16] and result["seeds"] == [0, 1]
    assert [(row["value"], row["seed"]) for row in result["rows"]] == [(0, 0), (0, 1), (16, 0), (16, 1)]
    for row in result["rows"]:
        folder = k_sweep.out / row["run"]
        assert row["run"] == f"k={row['value']}-seed={row['seed']}"
        config = json.loads((folder / "config.json").read_text())
        assert config["strategy_options"]["k"] == row["value"] and config["seed"] == row["seed"]
        final = json.loads((folder / "metrics.json").read_text())["final"]
        for split in SPLITS:
            assert row[split] == _scalars(final[split]) and row[split]["macro_f1"] is not None
        costs = json.loads((folder / "costs.json").read_text())
        assert row["trainable_params"] == costs["trainable_params"]
        assert row["seconds_per_epoch"] == costs["seconds_per_epoch"]

    # The same settings trained on their own, outside the sweep, score the same (CPU, seeded).
    single = tmp_path / "single"
    assert main(["run", "wildlife", "--data", str(k_sweep.data), "--strategy", "freeze", "--set", "k=16",
                 "--seed", "1", "--out", str(single), *SMALL]) == 0  # fmt: skip
    final = json.loads((single / "metrics.json").read_text())["final"]
    row = next(row for row in result["rows"] if (row["value"], row["seed"]) == (16, 1))
    for split in SPLITS:
        assert row[split] == _scalars(final[split]), split
    assert row["trainable_params"] == json.loads((single / "costs.json").read_text())["trainable_params"]
    other_seed = next(row for row in result["rows"] if (row["value"], row["seed"]) == (16, 0))
    assert other_seed["train"] != row["train"]  # the seed reached the run: not one run twice


@pytest.mark.slow
def test_trainable_parameters_are_what_freezing_k_blocks_leaves(k_sweep):
    from adaptlab.backbones.layer_map import parameters_under
    from adaptlab.plugins.registry import get_domain
    from adaptlab.plugins.spec import resolve_reference

    spec = get_domain("wildlife").backbone("efficientnet_lite0")
    backbone = resolve_reference(spec.builder)(dict(spec.options))
    assert backbone.layer_map.num_blocks == 16  # what L stood for
    trainable = {}
    for row in k_sweep.result["rows"]:
        frozen = sum(p.numel() for _, p in parameters_under(
            backbone.module, backbone.layer_map.bottom_modules(row["value"])))  # fmt: skip
        assert row["trainable_params"] == row["total_params"] - frozen, row["run"]
        trainable.setdefault(row["value"], set()).add(row["trainable_params"])
    assert all(len(counts) == 1 for counts in trainable.values())  # seeds do not change it
    assert trainable[0].pop() > trainable[16].pop() > 0  # K = L leaves the head


@pytest.mark.slow
def test_table_json_and_plot(k_sweep):
    result, printed = k_sweep.result, k_sweep.printed
    header = next(line for line in printed.splitlines() if line.startswith("k "))
    assert header.split()[:4] == ["k", "seeds", "trainable", "s/epoch"]
    assert "train macro_f1" in header and "val macro_f1" in header and "test macro_f1" in header
    for line in result["summary"]:
        rows = [row for row in result["rows"] if row["value"] == line["value"]]
        for split in SPLITS:
            values = [row[split]["macro_f1"] for row in rows]
            assert line[split]["mean"] == pytest.approx(sum(values) / 2)
            assert line[split]["std"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
        table_line = next(t for t in printed.splitlines() if t.split()[:2] == [str(line["value"]), "2"])
        assert f"{line['test']['mean']:.4f} ± {line['test']['std']:.4f}" in table_line
        assert f"{line['train']['mean']:.4f} ± {line['train']['std']:.4f}" in table_line
        assert f"{round(line['trainable_params']):,}" in table_line
    assert (k_sweep.out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_a_sweep_run_again_continues(k_sweep, tmp_path, capsys):
    out = tmp_path / "k"
    shutil.copytree(k_sweep.out, out)
    # One run lost, one stopped after its first step (a checkpoint to resume from).
    shutil.rmtree(out / "k=16-seed=1")
    stopped = out / "k=16-seed=0"
    config = dataclasses.replace(RunConfig.from_file(stopped / "config.json"), out=str(stopped))
    shutil.rmtree(stopped)
    holder = {}

    def stop_after_first_step(event):
        if event["event"] == "step" and event["global_step"] == 1:
            holder["trainer"].request_stop()

    run(config, progress=False, subscribers=[stop_after_first_step],
        on_trainer=lambda trainer: holder.setdefault("trainer", trainer))  # fmt: skip
    assert not (stopped / "metrics.json").exists()
    kept = {name: (out / name / "events.jsonl").stat().st_mtime_ns for name in ("k=0-seed=0", "k=0-seed=1")}

    assert main(_sweep_args(k_sweep.data, out)) == 0
    said = capsys.readouterr().err
    for name, action in (("k=0-seed=0", "reused"), ("k=0-seed=1", "reused"), ("k=16-seed=0", "resumed"),
                         ("k=16-seed=1", "trained")):  # fmt: skip
        assert f"{name}: {action}" in said
    assert {name: (out / name / "events.jsonl").stat().st_mtime_ns for name in kept} == kept
    events = [json.loads(line) for line in (stopped / "events.jsonl").read_text().splitlines()]
    steps = [event["global_step"] for event in events if event["event"] == "step"]
    assert "resume" in [event["event"] for event in events] and steps == sorted(set(steps))
    again = json.loads((out / "sweep.json").read_text())
    assert len(again["rows"]) == 4
    # Finished runs read back, and the lost one retrained to the same numbers (seeded, CPU).
    for before, after in zip(k_sweep.result["rows"], again["rows"], strict=True):
        if after["run"] != "k=16-seed=0":
            assert after["test"] == before["test"] and after["train"] == before["train"]

    # Another experiment in the same folder is refused, and leaves it as it was.
    recorded = (out / "sweep.json").read_bytes()
    assert main(["sweep", "wildlife", "--data", str(k_sweep.data), "--backbones", "efficientnet_lite0",
                 "--out", str(out), *SMALL]) == 2  # fmt: skip
    error = capsys.readouterr().err
    assert "over 'k'" in error and "over 'backbone'" in error
    assert main(_sweep_args(k_sweep.data, out, "--set", "lr=0.01")) == 2
    assert "other settings (lr)" in capsys.readouterr().err
    assert (out / "sweep.json").read_bytes() == recorded


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--strategy", "freeze", "--k", "0:99"], ["--k 0:99", "0..16", "16 blocks"]),
        (["--k", "0:L"], ["--k 0:L", "--strategy freeze"]),
        (["--strategy", "lora", "--k", "0,2"], ["--k 0,2", "--strategy freeze", "lora"]),
        (["--strategy", "freeze", "--k", "0,x"], ["--k 0,x", "'x'"]),
        (["--strategy", "freeze", "--k", "4:1"], ["--k 4:1", "backwards"]),
        (["--strategy", "freeze", "--k", "0:L", "--set", "k=2"], ["--set k=2"]),
        (["--strategy", "freeze", "--k", "0:L", "--backbones", "vgg16"], ["--k 0:L", "--backbones vgg16"]),
        (
            ["--backbones", "efficientnet_lite0,resnet5"],
            ["'resnet5'", "efficientnet_lite0, resnet50, densenet121"],
        ),
        (["--backbones", "efficientnet_lite0", "--backbone", "vgg16"], ["--backbone vgg16"]),
        (["--backbones", "efficientnet_lite0", "--seeds", "0,a"], ["--seeds '0,a'"]),
        ([], ["--k", "--backbones", "--lrs"]),
        (["--lrs", "0.001,x"], ["--lrs 0.001,x", "'x'"]),
        (["--lrs", "0,1e-3"], ["--lrs 0,1e-3", "0 is not a positive learning rate"]),
        (["--lrs", "1e-3,nan"], ["nan is not a positive"]),
        (["--lrs", "1e-3,0.0010000001"], ["6 significant digits"]),
        (["--lrs", "1e-3", "--set", "lr=0.01"], ["--set lr=0.01", "--lrs"]),
        (["--lrs", "1e-3", "--backbones", "vgg16"], ["--backbones vgg16 and --lrs 1e-3"]),
    ],
)
def test_bad_input_names_the_option_and_writes_nothing(tmp_path, capsys, extra, expected):
    out = tmp_path / "sweep"
    assert main(["sweep", "wildlife", "--out", str(out), "--epochs", "1", "--device", "cpu", *extra]) == 2
    error = capsys.readouterr().err
    assert error.startswith("adaptlab: error:")
    for fragment in expected:
        assert fragment in error
    assert not out.exists()


@pytest.mark.slow
def test_a_backbone_sweep_compares_backbones(tmp_path, capsys):
    out = tmp_path / "backbones"
    assert main(["sweep", "pointcloud", "--dataset", "generated-shapes", "--backbones",
                 "dgcnn,point_transformer", "--set", "train_samples=16", "--epochs", "1", "--device",
                 "cpu", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    result = json.loads((out / "sweep.json").read_text())
    assert result["varied"] == "backbone" and result["values"] == ["dgcnn", "point_transformer"]
    for row in result["rows"]:
        config = json.loads((out / row["run"] / "config.json").read_text())
        assert config["backbone"] == row["value"] and config["strategy"] == "full"
        assert row["trainable_params"] == row["total_params"]  # full fine-tuning
        final = json.loads((out / row["run"] / "metrics.json").read_text())["final"]
        assert row["test"] == _scalars(final["test"]) and row["train"] == _scalars(final["train"])
    assert result["rows"][0]["total_params"] != result["rows"][1]["total_params"]
    lines = printed.splitlines()
    assert any(line.startswith("dgcnn ") for line in lines)
    assert any(line.startswith("point_transformer ") for line in lines)
    assert "±" not in printed  # one seed: no spread to show
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_a_rate_sweep_trains_each_rate_and_chooses_on_validation(tmp_path, capsys):
    out = tmp_path / "lr"
    common = ["--dataset", "generated-shapes", "--strategy", "lora", "--set", "train_samples=24",
              "--epochs", "2", "--device", "cpu", "--quiet"]  # fmt: skip
    # The domain's own strategy, whose recipe rate config_for fills in: the sweep replaces it.
    recipe = tmp_path / "recipe"
    assert main(["sweep", "pointcloud", "--lrs", "1e-3", "--out", str(recipe),
                 *[a if a != "lora" else "full" for a in common]]) == 0  # fmt: skip
    assert json.loads((recipe / "lr=0.001-seed=0" / "config.json").read_text())["lr"] == 1e-3
    assert main(["sweep", "pointcloud", "--lrs", "3e-3,1e-7", "--seeds", "0,1", "--out", str(out),
                 *common]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    result = json.loads((out / "sweep.json").read_text())
    assert result["varied"] == "lr" and result["values"] == [1e-7, 3e-3]  # sorted
    assert "lr" not in result["settings"]
    for row in result["rows"]:
        config = json.loads((out / row["run"] / "config.json").read_text())
        assert config["lr"] == row["value"] and config["strategy"] == "lora"
        assert row["run"] == f"lr={row['value']:g}-seed={row['seed']}"
    # LoRA's B starts at zero and AdamW moves an entry by about the rate per step: at 1e-7 it
    # stays within 1e-5 of zero, at 3e-3 it leaves. The rate reached the optimizer, not only
    # config.json.
    moved = {}
    for rate in ("1e-07", "0.003"):
        weights = load_file(str(out / f"lr={rate}-seed=0" / "adapter" / "adapter_model.safetensors"))
        moved[rate] = max(float(t.abs().max()) for k, t in weights.items() if "lora_B" in k)
    assert moved["1e-07"] < 1e-5 < moved["0.003"], moved
    # The choice: the best mean validation metric, computed here from the rows themselves.
    val = {value: sum(row["val"]["macro_f1"] for row in result["rows"] if row["value"] == value) / 2
           for value in result["values"]}  # fmt: skip
    best = max(result["values"], key=lambda value: (val[value], -result["values"].index(value)))
    chosen = result["chosen_on_val"]
    assert chosen["value"] == best and chosen["val"]["mean"] == pytest.approx(val[best])
    test = [row["test"]["macro_f1"] for row in result["rows"] if row["value"] == best]
    assert chosen["test"]["mean"] == pytest.approx(sum(test) / 2)
    assert f"chosen on validation: lr={best:g}" in printed
    assert any(line.startswith("1e-07 ") for line in printed.splitlines())
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_the_choice_waits_for_every_run_and_reads_lower_as_better_where_it_is():
    from adaptlab.sweeps.table import chosen_on_validation

    def line(value, runs, val, test):
        return {"value": value, "runs": runs, "val": {"mean": val, "std": 0.0, "seeds": runs},
                "test": {"mean": test, "std": 0.0, "seeds": runs}}

    summary = [line(1e-4, 2, 0.30, 0.9), line(1e-3, 2, 0.20, 0.1), line(1e-2, 2, 0.25, 0.5)]
    assert chosen_on_validation(summary, True, 2)["value"] == 1e-4
    lower = chosen_on_validation(summary, False, 2)  # a loss: the smallest is best
    assert lower["value"] == 1e-3 and lower["test"]["mean"] == 0.1  # its test, not the best test
    summary[2]["runs"] = 1  # a value still training: no choice yet
    assert chosen_on_validation(summary, True, 2) is None
    summary[2]["runs"], summary[2]["val"] = 2, None  # no validation split: nothing to choose on
    assert chosen_on_validation(summary, True, 2) is None
