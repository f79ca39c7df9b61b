"""Generation runs (the eP-ALM bridge on the code domain's docstring-generation task) predicted
and exported: the run's own test split recomputes, from the table, the BLEU and exact match
its training wrote to metrics.json; new Python files give one row per function, made as the
training code was; a file that does not parse is skipped and listed; the safetensors export
generates the run's texts, and ONNX and TorchScript are refused by name.

One run serves the module: the planted colour pairs of test_bridge, with its tiny LM. The
docstring-generation name resolves to them for the module's duration, so that the run's
config reloads the data it trained on (the dataset's own data needs the plugin's LM:
minutes of pre-training on two cores).
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import test_bridge
import torch
from test_bridge import NAMES, _planted_samples

from adaptlab.data.splits import SplitDataset
from adaptlab.data.torch_datasets import make_torch_dataset
from adaptlab.run_loading import load_run
from adaptlab.tasks.bleu import corpus_bleu, exact_match, smoothed_bleu
from conftest import run_cli

pytestmark = pytest.mark.slow

# test_bridge's LM, the same cached folder.
tiny_lm = test_bridge.tiny_lm

SPLITS = {**NAMES, "test": [*NAMES["test"], "brush"]}  # eight held-out pairs

# Two functions as a user writes them (a decorator, a docstring, a comment, a method), and
# the code of each as the training data holds code (docstring and decorators removed,
# ast.unparse's layout), written out here.
NEW_FILE = '''import os


@staticmethod
def fill_bl(canvas):
    """Fill it."""
    # the colour
    canvas.set_colour("blue")
    return canvas


class Canvas:

    def stroke_gr(self, canvas):
        canvas.set_colour('green')

        return canvas
'''
AS_TRAINED = ["def fill_bl(canvas):\n    canvas.set_colour('blue')\n    return canvas",
              "def stroke_gr(self, canvas):\n    canvas.set_colour('green')\n    return canvas"]


def _planted(language_model: Path) -> SplitDataset:
    return SplitDataset(class_names=[], samples={s: _planted_samples(n) for s, n in SPLITS.items()},
                        modality="text-to-text", task="generation",
                        task_options={"language_model": str(language_model)})


@pytest.fixture(scope="module")
def run_dir(tiny_lm, tmp_path_factory):
    from adaptlab_code import docstring_data

    from adaptlab.run import config_for, run

    out = tmp_path_factory.mktemp("generation") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(docstring_data, "load_docstring_generation", lambda _: _planted(tiny_lm))
        # Batches of two at a constant rate: 16 steps, enough for the bridge to tell some
        # colours apart (different texts for different inputs), not all.
        config = config_for("code", dataset="docstring-generation", strategy="bridge",
                            out=str(out), epochs=2, batch_size=2, lr=1e-2, schedule="constant",
                            warmup_ratio=0.0, device="cpu")
        run(config, progress=False)
        yield out


def _generated(model, backbone, codes: list[str]) -> list[str]:
    """``model``'s texts for ``codes``, in one batch tokenized as the run's data is."""
    data = SplitDataset([], {"x": [((code, ""), i) for i, code in enumerate(codes)]},
                        modality="text-to-text", task="generation")
    dataset = make_torch_dataset(data, "x", backbone, False)
    batch, _ = dataset.collate([dataset[i] for i in range(len(dataset))])
    return model.generate(batch["source"])


def test_own_test_split_gives_the_reported_bleu_and_exact_match(run_dir, tmp_path, capsys):
    out = tmp_path / "test.csv"
    # In the run's batch size: the padding evaluation saw, so the same encoder features.
    code, printed, err = run_cli(["predict", str(run_dir), "--split", "test", "--out", str(out),
                                  "--batch-size", "2", "--quiet"], capsys)
    assert code == 0, err
    assert "predicted 8 inputs" in printed
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == ["path", "generated", "reference"]
    assert list(table["reference"]) == [target for (_, target), _ in _planted_samples(SPLITS["test"])]
    # Different texts for different inputs: a row matched to another's reference would show.
    assert table["generated"].nunique() > 1
    reported = json.loads((run_dir / "metrics.json").read_text())["final"]["test"]
    assert len(table) == reported["samples"]
    hypotheses, references = list(table["generated"]), list(table["reference"])
    assert corpus_bleu(hypotheses, references) == pytest.approx(reported["bleu"], abs=1e-12)
    assert exact_match(hypotheses, references) == reported["exact_match"]
    assert smoothed_bleu(hypotheses, references) == pytest.approx(reported["bleu_smoothed"],
                                                                  abs=1e-12)


def test_python_file_and_jsonl_give_one_row_per_function(run_dir, tmp_path):
    """Each function is an input, named file:qualified name:line, its code made as the
    training code was: the row's text is the run's for the code written as training holds it."""
    source = tmp_path / "canvas.py"
    source.write_text(NEW_FILE)
    loaded = load_run(run_dir, device="cpu", with_data=False)
    expected = _generated(loaded.model, loaded.backbone, AS_TRAINED)
    table = loaded.predict(source, out=tmp_path / "canvas.csv").table.fillna("")
    assert list(table.columns) == ["path", "generated"]
    assert list(table["path"]) == [f"{source}:fill_bl:5", f"{source}:Canvas.stroke_gr:14"]
    assert list(table["generated"]) == expected

    # The notebook's Predict panel draws each function's code under its generated text
    # (no attributions: generation runs are not explained).
    from adaptlab.predict.gallery import prediction_gallery

    page = prediction_gallery(loaded, loaded.predict(source, out=tmp_path / "drawn.csv"),
                              count=2, method="default")
    assert "no attributions: generation runs cannot be explained" in page
    for name, text in zip(["fill_bl", "Canvas.stroke_gr"], expected, strict=True):
        assert f"{name}" in page and html.escape(f"generated={text}") in page
    assert html.escape("canvas.set_colour('green')") in page

    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"code": NEW_FILE.split("\n\n\n")[1], "id": "fill"}) + "\n"
                       + json.dumps({"code": AS_TRAINED[1]}) + "\n")
    table = loaded.predict(records, out=tmp_path / "records.csv").table.fillna("")
    assert list(table["path"]) == ["fill", f"{records}:2"]
    assert list(table["generated"]) == expected


def test_folder_skips_what_does_not_parse(run_dir, tmp_path, capsys):
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "canvas.py").write_text(NEW_FILE)
    (folder / "broken.py").write_text("def paint(canvas:\n    return canvas\n")
    (folder / "tool.js").write_text("const paint = (canvas) => canvas;\n")
    out = tmp_path / "folder.csv"
    code, printed, err = run_cli(["predict", str(run_dir), "--data", str(folder), "--out",
                                  str(out), "--quiet"], capsys)
    assert code == 0, err
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table["path"]) == [f"{folder / 'canvas.py'}:fill_bl:5",
                                   f"{folder / 'canvas.py'}:Canvas.stroke_gr:14"]
    skipped = pd.read_csv(tmp_path / "folder.skipped.csv").set_index("file")["reason"]
    assert sorted(skipped.index) == [str(folder / "broken.py"), str(folder / "tool.js")]
    assert skipped[str(folder / "broken.py")].startswith("SyntaxError")
    assert "line 1" in skipped[str(folder / "broken.py")]
    assert "skipped 2 unreadable inputs" in printed

    empty = tmp_path / "constants"
    empty.mkdir()
    (empty / "values.py").write_text("RED = 'red'\n")
    code, _, err = run_cli(["predict", str(run_dir), "--data", str(empty), "--quiet"], capsys)
    assert code == 2 and f"{empty}: no Python function" in err
    assert len(err.strip().splitlines()) == 1


def test_safetensors_export_generates_the_runs_texts(run_dir, tiny_lm, tmp_path, capsys):
    from safetensors.torch import load_file

    from adaptlab.export import load_exported
    from adaptlab.tasks.generation import EncoderToLm

    out = tmp_path / "export"
    code, printed, err = run_cli(["export", str(run_dir), "--out", str(out)], capsys)
    assert code == 0, err
    assert "safetensors: max abs difference" in printed
    weights = load_file(str(out / "model.safetensors"))
    assert {key.split(".")[0] for key in weights} == {"encoder", "language_model", "bridge"}
    assert {"bridge.projection.weight", "bridge.projection.bias", "bridge.soft_token"} <= set(weights)
    # The LM is frozen: its weights are exported as pre-trained, every one of them.
    for key, tensor in load_file(str(tiny_lm / "model.safetensors")).items():
        assert torch.equal(weights[f"language_model.{key}"], tensor), key
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "adaptlab-generation"
    assert config["adaptlab"]["task_spec"]["task_options"] == {
        "language_model_config": "language_model"}
    assert str(tiny_lm) not in (out / "config.json").read_text()  # no path outside the folder
    assert (out / "language_model" / "config.json").is_file()
    assert (out / "tokenizer" / "tokenizer_config.json").is_file()
    pre = json.loads((out / "preprocessing.json").read_text())
    lm_config = json.loads((tiny_lm / "config.json").read_text())
    assert pre["generation"]["decoding"] == "greedy"
    assert (pre["generation"]["start_token_id"], pre["generation"]["end_token_id"]) == (
        lm_config["bos_token_id"], lm_config["eos_token_id"])
    assert (out / "README.md").read_text().startswith("---\nlibrary_name: adaptlab\n")

    moved = Path(shutil.move(str(out), tmp_path / "elsewhere"))  # the folder stands alone
    exported = load_exported(moved)
    assert type(exported) is EncoderToLm and not exported.training
    loaded = load_run(run_dir, device="cpu", with_data=False)
    held_out = [code for (code, _), _ in _planted_samples(SPLITS["test"])] + AS_TRAINED
    assert _generated(exported, loaded.backbone, held_out) == \
        _generated(loaded.model, loaded.backbone, held_out)
    data = SplitDataset([], {"test": _planted_samples(SPLITS["test"])},
                        modality="text-to-text", task="generation")
    dataset = make_torch_dataset(data, "test", loaded.backbone, False)
    batch, _ = dataset.collate([dataset[i] for i in range(3)])  # a batch size not checked
    with torch.no_grad():
        (logits, labels), (expected, expected_labels) = exported(batch), loaded.model(batch)
    assert float((logits - expected).abs().max()) < 1e-4
    assert torch.equal(labels, expected_labels)


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_graph_formats_are_refused_before_anything_is_written(run_dir, tmp_path, capsys, format):
    out = tmp_path / format
    code, _, err = run_cli(["export", str(run_dir), "--out", str(out), "--format", format],
                           capsys)
    assert code == 2 and not out.exists()
    assert len(err.strip().splitlines()) == 1
    assert f"--format {format}: generation runs" in err and "--format safetensors" in err


def test_reloading_with_data_keeps_the_language_model_the_run_trained_with(run_dir, tiny_lm,
                                                                           tmp_path):
    """The run saves only its bridge; its data, read again, may name another LM (a dataset
    option changed, another cache). The reload builds the one the run recorded."""
    from adaptlab_code import docstring_data
    from safetensors.torch import load_file, save_file

    other = Path(shutil.copytree(tiny_lm, tmp_path / "other-lm"))
    weights = load_file(str(other / "model.safetensors"))
    save_file({k: v + 0.5 for k, v in weights.items()}, str(other / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(docstring_data, "load_docstring_generation", lambda _: _planted(other))
        loaded = load_run(run_dir, device="cpu")
    assert len(loaded.data.samples["test"]) == len(_planted_samples(SPLITS["test"]))
    reloaded = loaded.model.language_model.state_dict()
    for key, tensor in load_file(str(tiny_lm / "model.safetensors")).items():
        assert torch.equal(reloaded[key], tensor), key
