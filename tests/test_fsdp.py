"""``fsdp=true``: two processes (torchrun, gloo on CPU) each hold half of every weight, gradient
and optimizer moment, and train what one process trains; checkpoints hold whole tensors, so a
run stopped sharded resumes in one process and one stopped in one process resumes sharded.

Full fine-tuning of the CNN with its BatchNorm statistics kept (``norm_stats=auto``): no batch
statistics, so the processes compute one process's gradients up to the order of float sums,
which Adam's division by small second moments magnifies over the steps. Two processes under
DistributedDataParallel end as far from one process (3.0e-5 here) as sharded ones (4.3e-5).
Every run here keeps NCHW weights (``channels_last=false``): FSDP shards contiguous parameters
only, so a sharded run keeps them, and the runs it is compared with do too (channels-last
convolutions sum in another order: 1.06e-4 from NCHW after two epochs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from adaptlab.config import RunConfig
from adaptlab.errors import AdaptlabError
from adaptlab.run import run
from conftest import scratch_dir, write_shape_folder, write_unequal_colour_folder

pytestmark = pytest.mark.slow

BATCH = 4
WEIGHT_TOLERANCE = 1e-4
LOSS_TOLERANCE = 1e-4
NOT_PARAMETERS = ("running_mean", "running_var", "num_batches_tracked")
LORA = {"strategy": "lora", "lr": 1e-4}


def _config(data: Path, out: Path, **fields) -> RunConfig:
    return RunConfig(**{"domain": "wildlife", "data": str(data), "strategy": "full",
                        "out": str(out), "device": "cpu", "epochs": 2, "image_size": 32,
                        "batch_size": BATCH, "lr": 1e-3, "channels_last": False, **fields})


def _adaptlab(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adaptlab.cli", *args], capture_output=True,
                          text=True, env=dict(os.environ), timeout=600)


def _final_weights(run_dir: Path) -> dict:
    """The run's final tensors: the model's, or peft's adapter."""
    path = run_dir / "weights.safetensors"
    return load_file(str(path if path.is_file() else run_dir / "adapter" /
                         "adapter_model.safetensors"))


def _assert_trained_as(one: Path, other: Path) -> None:
    mine = json.loads((one / "metrics.json").read_text())["final"]
    theirs = json.loads((other / "metrics.json").read_text())["final"]
    for split, metrics in mine.items():
        assert theirs[split]["samples"] == metrics["samples"], split
        assert theirs[split]["accuracy"] == metrics["accuracy"], split
        assert abs(theirs[split]["loss"] - metrics["loss"]) < LOSS_TOLERANCE, split
    first, second = _final_weights(one), _final_weights(other)
    assert first.keys() == second.keys()
    assert max(float((first[k].float() - second[k].float()).abs().max())
               for k in first) < WEIGHT_TOLERANCE


def _sharded_cli(domain: str, data: Path, out: Path, strategy: str, *, fsdp: bool = True,
                 extra: tuple[str, ...] = ()) -> Path:
    done = _adaptlab(["run", domain, "--data", str(data), "--strategy", strategy,
                      "--device", "cpu", "--epochs", "2", "--set", f"batch_size={BATCH}",
                      "--set", f"fsdp={str(fsdp).lower()}", "--set", "channels_last=false",
                      *extra, "--processes", "2",
                      "--out", str(out), "--quiet"])
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The data and one uninterrupted run in one process (not sharded)."""
    with scratch_dir(tmp_path_factory, "fsdp") as root:
        data = write_unequal_colour_folder(root / "data")
        yield data, run(_config(data, root / "one"), progress=False).run_dir


@pytest.fixture(scope="module")
def lora_reference(reference, tmp_path_factory):
    """LoRA's uninterrupted run in one process: peft saves and loads its tensors under names
    of its own, not the model's. At lr 1e-3 a resume with another process count ends 2e-3
    from it in the weights, unsharded too (float sums in another order, which Adam turns
    into whole steps where a gradient is near zero); at 1e-4, 2.4e-7."""
    data, _ = reference
    with scratch_dir(tmp_path_factory, "fsdp-lora") as root:
        yield data, run(_config(data, root / "one", **LORA), progress=False).run_dir


def test_two_sharded_processes_hold_half_each_and_train_as_one(reference, tmp_path):
    data, one = reference
    out = _sharded_cli("wildlife", data, tmp_path / "two", "full",
                       extra=("--set", "image_size=32", "--set", "lr=0.001"))
    _assert_trained_as(one, out)

    sharded = [e for e in _events(out) if e["event"] == "fsdp"]
    assert len(sharded) == 1 and sharded[0]["processes"] == 2 and sharded[0]["units"] >= 2
    # The whole model's parameter bytes, counted from the saved weights (float32).
    whole = 4 * sum(t.numel() for name, t in load_file(str(one / "weights.safetensors")).items()
                    if not name.endswith(NOT_PARAMETERS))
    memory = json.loads((out / "costs.json").read_text())["memory_bytes"]
    # The main process's slice: half, and a row more where a tensor's first dimension is odd.
    assert 0.5 * whole <= memory["parameters"] <= 0.51 * whole
    assert 0.5 * whole <= memory["gradients"] <= 0.51 * whole
    assert 2 * 0.5 * whole <= memory["optimizer"] <= 2 * 0.51 * whole  # two Adam moments
    # Saved activations: those of half the batch. A block's gathered weights, which autograd
    # keeps for its backward while they exist, are not counted (they would add 12.4 MiB).
    alone = json.loads((one / "costs.json").read_text())["memory_bytes"]["activations"]
    assert abs(memory["activations"] - alone / 2) <= 0.02 * alone

    # The planner, told of the processes, predicts the main process's share (issue 16's 15 %).
    from adaptlab.costs.planner import plan_memory

    config = RunConfig.from_file(out / "config.json")
    plan = plan_memory(config, ["full"], processes=2).plans[0]
    for kind, measured in memory.items():
        if measured:
            assert abs(plan.memory_bytes[kind] / measured - 1) <= 0.15, kind
    whole_plan = plan_memory(config, ["full"], processes=1).plans[0]  # one process holds all
    assert whole_plan.memory_bytes["parameters"] == pytest.approx(whole, rel=1e-6)
    assert json.loads((out / "config.json").read_text())["fsdp"] is True


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_a_run_stopped_in_one_process_resumes_sharded(request, strategy, tmp_path):
    data, one = request.getfixturevalue("reference" if strategy == "full" else "lora_reference")
    fields = {} if strategy == "full" else LORA
    holder = {}

    def stop_after_first_step(event):
        if event["event"] == "step" and event["global_step"] == 1:
            holder["trainer"].request_stop()

    out = tmp_path / "resumed"
    stopped = run(_config(data, out, fsdp=True, **fields), progress=False,
                  subscribers=[stop_after_first_step],
                  on_trainer=lambda trainer: holder.setdefault("trainer", trainer))
    assert stopped.metrics == {}
    done = _adaptlab(["run", "wildlife", "--out", str(out), "--resume", "--processes", "2",
                      "--quiet"])
    assert done.returncode == 0, done.stderr[-3000:]
    events = _events(out)
    assert [(e["processes"], e["units"] > 0) for e in events if e["event"] == "fsdp"] \
        == [(1, False), (2, True)]  # one process has nothing to shard over
    _assert_trained_as(one, out)


def test_a_sharded_run_stopped_resumes_in_one_process(reference, tmp_path):
    from adaptlab.run_process import FINISHED, RunWorker

    data, one = reference
    out = tmp_path / "sharded"
    worker = RunWorker().spawn()
    try:
        job = worker.submit(_config(data, out, fsdp=True), processes=2)
        while (event := job.events.get(timeout=600))["event"] != FINISHED:
            if event["event"] == "step" and event["global_step"] == 2:
                job.request_stop()
        assert job.error is None, job.error_details
        assert job.result.metrics == {}
    finally:
        worker.close()
    resumed = run(RunConfig.from_file(out / "config.json"), resume=True, progress=False)
    assert resumed.costs["processes"] == 1
    resumes = [e for e in _events(out) if e["event"] == "resume"]
    # The stop reaches the run a step or two after it is sent; 5 steps make an epoch.
    assert len(resumes) == 1 and 2 <= 5 * resumes[0]["epoch"] + resumes[0]["step_in_epoch"] < 10
    _assert_trained_as(one, out)


@pytest.mark.parametrize(("strategy", "settings"), [
    ("svfit", {"lr": 3e-3}), ("lst", {"lr": 3e-3}), ("slimfit", {"lr": 1e-3}),
    ("full", {"lr": 1e-3, "gradient_checkpointing": True})])
def test_sharded_runs_train_as_in_one_process(reference, strategy, settings, tmp_path):
    """SVFit computes each weight from its sharded original and singular values inside the
    layer's call; LST runs the sharded backbone without autograd and trains a side network;
    SlimFit freezes other units at every step, chosen from scores of the whole weights (on
    slices the processes would freeze different units, and two sets of gradients would be
    averaged into one update);
    timm's checkpointing calls each block of a stage itself, not the stage, so every block
    must gather its own weights (the CNN's smaller blocks otherwise share their stage's)."""
    data, _ = reference
    one = run(_config(data, tmp_path / "one", strategy=strategy, **settings),
              progress=False).run_dir
    extra = [item for name, value in settings.items()
             for item in ("--set", f"{name}={str(value).lower()}")]
    two = _sharded_cli("wildlife", data, tmp_path / "two", strategy,
                       extra=("--set", "image_size=32", *extra))
    _assert_trained_as(one, two)
    alone = json.loads((one / "costs.json").read_text())["memory_bytes"]
    shared = json.loads((two / "costs.json").read_text())["memory_bytes"]
    assert 0.5 * alone["parameters"] <= shared["parameters"] <= 0.51 * alone["parameters"]

    from adaptlab.costs.planner import plan_memory

    # The planner, for one process and for the main one of two sharded (checkpointing keeps
    # a tenth of the CNN's saved tensors here: a plan without it would be ten times over).
    for folder, processes, measured_bytes in ((one, 1, alone), (two, 2, shared)):
        plan = plan_memory(RunConfig.from_file(folder / "config.json"), [strategy],
                           processes=processes).plans[0]
        for kind, measured in measured_bytes.items():
            if measured:
                assert abs(plan.memory_bytes[kind] / measured - 1) <= 0.15, (processes, kind)


def test_adalora_sharded_keeps_the_ranks_one_process_keeps(reference, tmp_path):
    """AdaLoRA ranks every singular triplet of every layer against one budget: ranked on each
    process's slices, the processes would keep different triplets. 2 epochs of 5 steps with
    the budget falling over them: the final adapter (peft's compact form, cut to the kept
    ranks) must be the one process's, pattern and values."""
    data, _ = reference
    one = run(_config(data, tmp_path / "one", strategy="adalora"), progress=False).run_dir
    two = _sharded_cli("wildlife", data, tmp_path / "two", "adalora",
                       extra=("--set", "image_size=32", "--set", "lr=0.001"))
    _assert_trained_as(one, two)
    patterns = [json.loads((out / "adapter" / "adapter_config.json").read_text())["rank_pattern"]
                for out in (one, two)]
    kept = [sum(sum(mask) for mask in pattern.values()) for pattern in patterns]
    assert 0 < kept[0] < sum(len(mask) for mask in patterns[0].values())  # some were dropped
    assert patterns[1] == patterns[0]
    halves = [json.loads((out / "costs.json").read_text())["memory_bytes"]["parameters"]
              for out in (two, one)]
    assert 0.5 * halves[1] <= halves[0] <= 0.51 * halves[1]


def test_prompts_train_sharded_as_replicated(tmp_path):
    """Prompt tokens inserted into the point transformer's sequence. The point-cloud tasks draw
    their points per process, so the reference is the same two processes unsharded."""
    data = write_shape_folder(tmp_path / "data", counts=(5, 7, 7))
    extra = ("--backbone", "point_transformer")
    sharded = _sharded_cli("pointcloud", data, tmp_path / "sharded", "dvpt", extra=extra)
    replicated = _sharded_cli("pointcloud", data, tmp_path / "replicated", "dvpt", fsdp=False,
                              extra=extra)
    _assert_trained_as(replicated, sharded)
    halves = [json.loads((out / "costs.json").read_text())["memory_bytes"]["parameters"]
              for out in (sharded, replicated)]
    assert 0.5 * halves[1] <= halves[0] <= 0.51 * halves[1]


@pytest.fixture
def unsharded_strategy():
    """A strategy that does not declare it shards (a third party's), registered for one test:
    every built-in one shards. The registry is global, so it is removed afterwards."""
    from adaptlab.strategies.full import FullFineTuning
    from adaptlab.strategies.registry import STRATEGIES

    class Unshardable(FullFineTuning):
        name = "unshardable-test"
        shards = False

    STRATEGIES.register(Unshardable)
    try:
        yield Unshardable.name
    finally:
        STRATEGIES.unregister(Unshardable.name)


@pytest.mark.parametrize(("fields", "message"), [
    ({"strategy": "unshardable-test"},
     "fsdp=true: strategy 'unshardable-test' cannot have its weights sharded over processes; "
     "strategies that can: adalora, bridge, dvpt, freeze, full, head, ia3, idpt, llrd, loha, "
     "lokr, lora, lst, oft, slimfit, svfit, vera, vpt"),
    ({"torch_compile": True}, "fsdp=true and torch_compile=true cannot be used together"),
])
def test_what_cannot_be_sharded_is_refused_before_the_run_folder(
        reference, unsharded_strategy, tmp_path, fields, message):
    data, _ = reference
    config = _config(data, tmp_path / "refused", fsdp=True, **fields)
    with pytest.raises(AdaptlabError) as refused:
        run(config, progress=False)
    assert message in str(refused.value)
    assert not (tmp_path / "refused").exists()


def test_a_refusal_stops_every_process_with_its_message(reference, tmp_path):
    """The main process checks the settings; the others must not wait for it at a barrier
    and fail there with a lost connection instead of the refusal."""
    data, _ = reference
    out = tmp_path / "refused"
    done = _adaptlab(["run", "wildlife", "--data", str(data), "--strategy", "full",
                      "--device", "cpu", "--set", "fsdp=true", "--set", "torch_compile=true",
                      "--processes", "2", "--out", str(out), "--quiet"])
    assert done.returncode != 0
    assert "fsdp=true and torch_compile=true cannot be used together" in done.stderr
    assert "Connection closed" not in done.stderr
    assert not out.exists()


def test_a_sharded_process_saves_what_a_replicated_one_saves(tmp_path):
    """MiniLM with Hugging Face's checkpointing: the main process's saved activations do not
    depend on where its weights live. FSDP frees a block's gathered weights after its forward
    and an activation may be allocated where they were: left out as a weight, it went
    uncounted (6.31 MB replicated, 5.52 sharded, on 32 samples). The tests' own code files:
    the demo's 930 functions cost two minutes of evaluation and change nothing here."""
    from test_planner import _code_folder

    extra = ("--data", str(_code_folder(tmp_path / "code")), "--set", "gradient_checkpointing=true")
    runs = [_adaptlab(["run", "code", "--strategy", "full", "--device", "cpu", "--epochs", "1",
                       "--set", "batch_size=8", "--set", f"fsdp={fsdp}", *extra,
                       "--processes", "2", "--out", str(tmp_path / fsdp), "--quiet"])
            for fsdp in ("true", "false")]
    assert all(done.returncode == 0 for done in runs), runs[0].stderr[-3000:]
    sharded, replicated = (tmp_path / "true", tmp_path / "false")
    _assert_trained_as(replicated, sharded)
    saved = [json.loads((out / "costs.json").read_text())["memory_bytes"]["activations"]
             for out in (sharded, replicated)]
    assert saved[0] == saved[1]
