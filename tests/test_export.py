"""``adaptlab export``: one small LoRA run exported as a merged Hub folder, as base weights plus
a peft adapter, as ONNX and as TorchScript. Each export's outputs are compared with outputs
the test computes itself from the run reloaded by ``load_run`` (never with the export's own
check), on held-out inputs built with the run's preprocessing. A LoHa run checks a merge that
is not LoRA's.

The other modalities' exports are tested beside the runs their predict tests train (text and
retrieval in test_predict_code.py, series, point clouds, fields and scans in the other
test_predict_*.py; a prompted run in test_prompts.py, lst and svfit in their own modules),
with the helpers of export_checks.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_cli

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def run_dir(wildlife_lora_run) -> Path:
    return wildlife_lora_run


@pytest.fixture(scope="module")
def reference(run_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """Three held-out images (a batch size no export was made with) and the run's logits."""
    from adaptlab.data.torch_datasets import make_torch_dataset
    from adaptlab.run_loading import load_run

    loaded = load_run(run_dir, device="cpu")
    dataset = make_torch_dataset(loaded.data, "test", loaded.backbone, False,
                                 {"image_size": loaded.config.image_size})
    images = torch.stack([dataset[i][0] for i in range(3)])
    with torch.no_grad():
        logits = loaded.model(images)
    return images, logits


def _difference(outputs, expected: torch.Tensor) -> float:
    return float((torch.as_tensor(outputs).float() - expected).abs().max())


def test_merged_export_is_a_plain_module_with_the_runs_outputs(run_dir, reference, tmp_path,
                                                               capsys):
    from safetensors.torch import load_file

    from adaptlab.export import load_exported
    from adaptlab.tasks.classification import ClassificationModel

    out = tmp_path / "merged"
    code, stdout, err = run_cli(["export", str(run_dir), "--out", str(out), "--merge"], capsys)
    assert code == 0, err
    assert str(out) in stdout and "safetensors: max abs difference" in stdout
    assert not any("lora" in key for key in load_file(str(out / "model.safetensors")))
    model = load_exported(out)
    assert type(model) is ClassificationModel and not model.training
    images, expected = reference
    with torch.no_grad():
        assert _difference(model(images), expected) < TOLERANCE

    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "adaptlab-classification"
    assert config["id2label"] == {"0": "blue", "1": "green", "2": "red"}
    assert config["adaptlab"]["merged"] is True and config["adaptlab"]["adapter"] is None
    pre = json.loads((out / "preprocessing.json").read_text())
    # EfficientNet-Lite0's normalisation, as its offline weights expect (not ImageNet's).
    assert pre["image"]["mean"] == [0.5, 0.5, 0.5] and pre["image"]["std"] == [0.5, 0.5, 0.5]
    assert pre["image"]["image_size"] == 64 and pre["class_names"] == ["blue", "green", "red"]
    assert (out / "README.md").read_text().startswith("---\nlibrary_name: adaptlab\n")


def test_unmerged_lora_export_is_base_weights_plus_a_peft_adapter(run_dir, reference, tmp_path):
    from peft import PeftConfig, PeftModel
    from safetensors.torch import load_file

    from adaptlab.export import export_run, load_exported

    out = tmp_path / "adapter"
    summary = export_run(run_dir, out)
    assert summary["merged"] is False and "adapter/adapter_config.json" in summary["files"]
    assert PeftConfig.from_pretrained(str(out / "adapter")).peft_type == "LORA"
    assert not any("lora" in key for key in load_file(str(out / "model.safetensors")))
    assert json.loads((out / "config.json").read_text())["adaptlab"]["adapter"] == "adapter"
    model = load_exported(out)
    assert isinstance(model, PeftModel)
    images, expected = reference
    with torch.no_grad():
        assert _difference(model(images), expected) < TOLERANCE


def test_onnx_export_matches_the_run_under_onnxruntime(run_dir, reference, tmp_path):
    import onnxruntime

    from adaptlab.export import export_run

    out = tmp_path / "onnx"
    summary = export_run(run_dir, out, format="onnx")
    assert summary["merged"] is True and summary["max_abs_diff"]["onnx"] < TOLERANCE
    session = onnxruntime.InferenceSession(str(out / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    images, expected = reference
    (logits,) = session.run(["logits"], {"pixel_values": images.numpy()})
    assert _difference(logits, expected) < TOLERANCE
    assert (out / "model.safetensors").is_file() and (out / "preprocessing.json").is_file()


def test_torchscript_export_loads_with_torch_alone_and_matches(run_dir, reference, tmp_path):
    from adaptlab.export import export_run

    out = tmp_path / "torchscript"
    export_run(run_dir, out, format="torchscript")
    images, expected = reference
    torch.save({"images": images, "expected": expected}, tmp_path / "check.pt")
    # A fresh interpreter that imports torch only: neither adaptlab nor peft is needed.
    script = (
        "import sys, torch\n"
        f"check = torch.load({str(tmp_path / 'check.pt')!r})\n"
        f"model = torch.jit.load({str(out / 'model.pt')!r})\n"
        "with torch.no_grad():\n"
        "    difference = (model(check['images']) - check['expected']).abs().max().item()\n"
        "assert not any(name.startswith(('adaptlab', 'peft')) for name in sys.modules)\n"
        "print(difference)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip().splitlines()[-1]) < TOLERANCE


def test_cli_refuses_a_non_empty_out_and_an_unknown_format(run_dir, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    code, _, err = run_cli(["export", str(run_dir), "--out", str(taken)], capsys)
    assert code == 2 and str(taken) in err and "not empty" in err
    assert (taken / "notes.txt").read_text() == "keep me"
    code, _, err = run_cli(["export", str(run_dir), "--out", str(tmp_path / "new"),
                            "--format", "tflite"], capsys)
    assert code == 2 and "'tflite'" in err and not (tmp_path / "new").exists()


def test_the_folders_card_is_the_runs_model_card(run_dir, tmp_path):
    """README.md is the run's own card; an edited card without the Hub's front matter gets it
    in front; a run from before model cards gets one written from its folder."""
    import shutil

    from adaptlab.export.folder import hub_card

    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    written = (copy / "MODEL_CARD.md").read_text()
    assert written.startswith("---\n") and hub_card(copy) == written
    (copy / "MODEL_CARD.md").write_text("# My model\n\nTrained on my photos.\n")
    card = hub_card(copy)
    assert card.startswith("---\nlibrary_name: adaptlab\ntags:\n")
    assert '- "wildlife"' in card and '- "lora"' in card
    assert card.endswith("\n---\n\n# My model\n\nTrained on my photos.\n")
    (copy / "MODEL_CARD.md").unlink()
    assert hub_card(copy) == written  # the same card, written again from the run folder


def test_a_loha_run_merges_into_plain_weights_with_the_runs_outputs(tmp_path):
    """peft's other merges than LoRA's: LoHa's Hadamard product folded into the convolutions
    and linears, checked against the run and against the run with its adapter switched off
    (which the merged weights must not be)."""
    from export_checks import export_and_compare, held_out, largest_difference
    from safetensors.torch import load_file

    from adaptlab.config import RunConfig
    from adaptlab.run import run
    from adaptlab.run_loading import load_run
    from conftest import write_colour_folder

    data = write_colour_folder(tmp_path / "data", per_class=4)
    run(RunConfig(domain="wildlife", data=str(data), strategy="loha", out=str(tmp_path / "run"),
                  device="cpu", epochs=1, image_size=32, batch_size=4, lr=3e-3), progress=False)
    loaded = load_run(tmp_path / "run", device="cpu")
    reference = held_out(loaded)
    with torch.no_grad(), loaded.unadapted() as unadapted:
        switched_off = max(largest_difference([unadapted(inputs)], expected)
                           for inputs, expected in reference)
    assert switched_off > 100 * TOLERANCE  # an export that dropped the adapter would show
    check = export_and_compare(tmp_path / "run", tmp_path / "export", "safetensors", reference)
    assert check.config["adaptlab"]["merged"] is True and check.config["adaptlab"]["adapter"] is None
    assert not any("hada" in key for key in load_file(str(tmp_path / "export" /
                                                          "model.safetensors")))
    assert check.differences["folder"] < TOLERANCE
