"""The core transfer workflow: a cached source run, transfer and control at each target
fraction and seed with the same budget, the learning-curve table and plot, and a curve that
continues instead of retraining."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import save_file

from adaptlab.cli import main
from adaptlab.config import RunConfig
from adaptlab.errors import AdaptlabError
from adaptlab.transfer.init_weights import finished_run_config
from adaptlab.transfer.source_cache import source_key

SMALL = ["--epochs", "1", "--device", "cpu", "--set", "image_size=64", "--source-set",
         "image_size=64", "--quiet"]


def _transfer(out: Path, cache: Path, *extra: str) -> int:
    return main(["transfer", "wildlife", "--out", str(out), "--cache", str(cache),
                 "--fractions", "0.1,1", "--seeds", "0,1", *SMALL, *extra])


@pytest.mark.slow
def test_learning_curve_runs_both_arms_caches_the_source_and_continues(tmp_path, capsys):
    out, cache = tmp_path / "curve", tmp_path / "cache"
    assert _transfer(out, cache) == 0
    first = capsys.readouterr()
    assert "source: training" in first.err and "(trained)" in first.out
    result = json.loads((out / "learning_curve.json").read_text())
    assert result["source"]["dataset"] == "cartoons" and result["target"]["dataset"] == "animals"
    assert [row["fraction"] for row in result["summary"]] == [0.1, 1.0]
    assert len(result["points"]) == 2 * 2 * 2  # fractions x seeds x arms
    source_dir = Path(result["source"]["run_dir"])
    for point in result["points"]:
        config = json.loads((Path(point["run_dir"]) / "config.json").read_text())
        metrics = json.loads((Path(point["run_dir"]) / "metrics.json").read_text())
        assert config["seed"] == point["seed"] and config["epochs"] == 1
        assert config["train_samples"] == (None if point["fraction"] == 1 else 4)
        if point["arm"] == "transfer":
            assert config["init_from"] == str(source_dir)
            # Same classes in the source: the backbone and the head start from it.
            assert metrics["init_from"]["tensors"]["backbone"] > 0
            assert metrics["init_from"]["tensors"]["head"] > 0
        else:
            assert config["init_from"] is None and metrics["init_from"] is None
        assert point["metric"] == metrics["final"]["test"][result["monitor"]]
    for row in result["summary"]:
        values = [p["metric"] for p in result["points"]
                  if p["fraction"] == row["fraction"] and p["arm"] == "transfer"]
        assert row["transfer"]["mean"] == pytest.approx(sum(values) / len(values))
        assert row["gain"] == pytest.approx(row["transfer"]["mean"] - row["control"]["mean"])
    table = (out / "learning_curve.md").read_text()
    assert "| 0.1 | 4 |" in table and "| 1 | 38 |" in table
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"

    # Again: the source is reused and every finished point is read back, not retrained.
    stamps = {p: (Path(p) / "metrics.json").stat().st_mtime_ns
              for p in [str(source_dir)] + [pt["run_dir"] for pt in result["points"]]}
    assert _transfer(out, cache) == 0
    again = capsys.readouterr()
    assert "source: reusing the cached run" in again.err and "(reused)" in again.out
    assert {p: (Path(p) / "metrics.json").stat().st_mtime_ns for p in stamps} == stamps
    assert json.loads((out / "learning_curve.json").read_text())["summary"] == result["summary"]

    # The same folder with other target settings would mix two experiments: refused.
    assert _transfer(out, cache, "--set", "lr=0.01") == 2
    assert "other target settings (lr)" in capsys.readouterr().err


def test_source_key_ignores_where_and_on_what_a_run_is_made():
    base = RunConfig(domain="wildlife", dataset="cartoons", strategy="full", out="a")
    assert source_key(base) == source_key(RunConfig(domain="wildlife", dataset="cartoons",
                                                    strategy="full", out="b", device="cpu"))
    assert source_key(base) != source_key(RunConfig(domain="wildlife", dataset="cartoons",
                                                    strategy="full", out="a", lr=0.01))


def test_init_from_refuses_runs_it_cannot_start_from(tmp_path):
    with pytest.raises(AdaptlabError, match="not a run folder"):
        finished_run_config(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(AdaptlabError, match="has not finished"):
        finished_run_config(tmp_path)
    (tmp_path / "metrics.json").write_text("{}")
    from adaptlab.strategies.registry import get_strategy_class

    with pytest.raises(AdaptlabError, match="weights.safetensors missing"):
        get_strategy_class("full").from_options({}).final_tensors(tmp_path)
    with pytest.raises(AdaptlabError, match="adapter_model.safetensors missing"):
        get_strategy_class("lora").from_options({}).final_tensors(tmp_path)


@pytest.mark.slow
def test_init_from_a_run_of_another_backbone_names_a_tensor(tmp_path, capsys):
    import torch

    source = tmp_path / "source"
    source.mkdir()
    (source / "config.json").write_text("{}")
    (source / "metrics.json").write_text(json.dumps({"class_names": []}))
    save_file({"backbone.conv_stem.weight": torch.zeros(3, 3, 1, 1)},
              str(source / "weights.safetensors"))
    code = main(["run", "wildlife", "--out", str(tmp_path / "run"), "--device", "cpu",
                 "--epochs", "1", "--set", "image_size=64", "--set", f"init_from={source}",
                 "--quiet"])
    assert code == 2
    assert "backbone.conv_stem.weight" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_bad_fractions_and_seeds_are_named(capsys):
    assert main(["transfer", "wildlife", "--fractions", "0,0.5", "--out", "unused"]) == 2
    assert "fractions [0.0, 0.5] must lie in (0, 1]" in capsys.readouterr().err
    assert main(["transfer", "wildlife", "--seeds", "a,b", "--out", "unused"]) == 2
    assert "--seeds 'a,b'" in capsys.readouterr().err


@pytest.mark.slow
def test_an_interrupted_source_run_is_resumed_not_retrained(tmp_path, capsys):
    import dataclasses

    from adaptlab.run import config_for, run
    from adaptlab.transfer.source_cache import ensure_source_run

    source = config_for("wildlife", dataset="cartoons", strategy="full", epochs=1,
                        device="cpu", image_size=64)
    cache = tmp_path / "cache"
    run_dir = cache / "sources" / f"wildlife-{source_key(source)}"
    holder = {}

    def stop_after_first_step(event):
        if event["event"] == "step" and event["global_step"] == 1:
            holder["trainer"].request_stop()

    run(dataclasses.replace(source, out=str(run_dir)), progress=False,
        subscribers=[stop_after_first_step],
        on_trainer=lambda trainer: holder.setdefault("trainer", trainer))
    assert not (run_dir / "metrics.json").exists()

    found = ensure_source_run(source, cache, progress=False)
    assert found.action == "resumed" and found.run_dir == run_dir
    assert "source: resuming" in capsys.readouterr().err
    steps = [json.loads(line)["global_step"] for line in
             (run_dir / "events.jsonl").read_text().splitlines()
             if json.loads(line)["event"] == "step"]
    assert steps == sorted(set(steps)) and steps[0] == 1  # each step once: continued
    assert ensure_source_run(source, cache, progress=False).action == "reused"
