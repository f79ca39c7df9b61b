"""Predictions on new data through a finished run: the run's own test split gives back the
metrics the run reported, a loose folder of photos is predicted without the training data at
hand, unreadable files are skipped and listed, and bad requests are refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score

from adaptlab.errors import AdaptlabError
from adaptlab.run_loading import load_run
from conftest import run_cli, write_colour_folder

pytestmark = pytest.mark.slow

CLASSES = ("red", "green", "blue")


@pytest.fixture(scope="module")
def lora_run(wildlife_lora_run) -> Path:
    return wildlife_lora_run


def test_own_test_split_gives_the_reported_metrics(lora_run: Path, tmp_path: Path) -> None:
    table = load_run(lora_run).predict(split="test", out=tmp_path / "test.csv").table
    reported = json.loads((lora_run / "metrics.json").read_text())["final"]["test"]
    assert len(table) == reported["samples"]
    probabilities = table[[f"probability_{c}" for c in CLASSES]].to_numpy()
    # The prediction column is the most probable class, as the metrics count it.
    assert list(table["prediction"]) == [CLASSES[i] for i in probabilities.argmax(axis=1)]
    assert accuracy_score(table["label"], table["prediction"]) == pytest.approx(
        reported["accuracy"], abs=1e-9)
    assert f1_score(table["label"], table["prediction"], labels=list(CLASSES), average="macro",
                    zero_division=0) == pytest.approx(reported["macro_f1"], abs=1e-9)
    # The true labels are the folders the test wrote the images in.
    assert all(Path(p).parent.name == label for p, label in zip(table["path"], table["label"],
                                                                 strict=True))


def test_loose_folder_without_training_data(lora_run: Path, tmp_path: Path) -> None:
    """New photos in one folder (no class folders), a text file and a broken JPEG among them;
    the training data is gone (a colleague's machine): the run's data.json is enough."""
    new = tmp_path / "new"
    new.mkdir()
    rng = np.random.default_rng(7)
    for i, channel in enumerate((0, 1, 2, 0)):
        pixels = rng.integers(0, 120, size=(40, 56, 3))
        pixels[..., channel] += 120
        Image.fromarray(pixels.astype(np.uint8)).save(new / f"photo{i}.jpg")
    (new / "notes.txt").write_text("not a photo")
    (new / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (new / ".hidden.png").write_bytes(b"")
    moved = lora_run.parent / "data-elsewhere"
    shutil.move(lora_run.parent / "data", moved)
    try:
        with pytest.raises(AdaptlabError, match="does not exist"):
            load_run(lora_run)  # the full reload needs the training data ...
        import adaptlab  # the README's entry point

        loaded = adaptlab.load_run(lora_run, with_data=False)  # ... predicting does not
        result = loaded.predict(new, out=tmp_path / "out.csv", batch_size=3)
    finally:
        shutil.move(moved, lora_run.parent / "data")
    table = result.table
    assert sorted(Path(p).name for p in table["path"]) == [f"photo{i}.jpg" for i in range(4)]
    assert "label" not in table.columns
    skipped = {Path(s["file"]).name: s["reason"] for s in result.skipped}
    assert set(skipped) == {"notes.txt", "broken.jpg"}
    assert "not an image" in skipped["notes.txt"]
    listed = pd.read_csv(tmp_path / "out.skipped.csv")
    assert sorted(Path(f).name for f in listed["file"]) == ["broken.jpg", "notes.txt"]


def test_batches_stream_to_the_same_table(lora_run: Path, tmp_path: Path) -> None:
    loaded = load_run(lora_run)
    one = loaded.predict(split="val", out=tmp_path / "one.csv", batch_size=1).table
    many = loaded.predict(split="val", out=tmp_path / "many.csv", batch_size=64).table
    assert list(one["path"]) == list(many["path"])
    columns = [f"probability_{c}" for c in CLASSES]
    np.testing.assert_allclose(one[columns].to_numpy(), many[columns].to_numpy(), atol=1e-5)


def test_rows_written_a_chunk_at_a_time_make_the_same_table(lora_run: Path, tmp_path: Path,
                                                             monkeypatch) -> None:
    """The table waits for a chunk of rows before writing them; chunks of one batch and one
    chunk for the whole split give the same bytes, every row once, in input order."""
    import adaptlab.predict.classification as classification

    loaded = load_run(lora_run)
    whole = loaded.predict(split="val", out=tmp_path / "whole.csv", batch_size=2)
    monkeypatch.setattr(classification, "CHUNK_CELLS", 1)  # every batch written at once
    batched = loaded.predict(split="val", out=tmp_path / "batched.csv", batch_size=2)
    assert whole.count == batched.count == len(loaded.data.samples["val"]) > 2
    assert whole.table_path.read_bytes() == batched.table_path.read_bytes()


def test_predicting_leaves_the_trainable_parameters_as_they_were(lora_run: Path,
                                                                   tmp_path: Path) -> None:
    """The forward runs with no parameter requiring grad (some kernels take a slower path for
    one that does), and the run's model gets its trainable parameters back afterwards, also
    when the prediction is interrupted midway."""
    loaded = load_run(lora_run)
    before = {name: p.requires_grad for name, p in loaded.model.named_parameters()}
    assert any(before.values()) and not all(before.values())  # LoRA: only the adapters train
    seen = []

    def record(module, args) -> None:
        seen.append(any(p.requires_grad for p in module.parameters()))
        if len(seen) == 2 and interrupt:
            raise KeyboardInterrupt

    hook = loaded.model.register_forward_pre_hook(record)
    interrupt = False
    loaded.predict(split="val", out=tmp_path / "val.csv", batch_size=2)
    assert seen and not any(seen)
    assert {name: p.requires_grad for name, p in loaded.model.named_parameters()} == before
    interrupt, seen[:] = True, []
    with pytest.raises(KeyboardInterrupt):
        loaded.predict(split="val", out=tmp_path / "stopped.csv", batch_size=2)
    hook.remove()
    assert {name: p.requires_grad for name, p in loaded.model.named_parameters()} == before
    assert not (tmp_path / "stopped.csv").exists()


def test_cli_predict_and_its_refusals(lora_run: Path, tmp_path: Path, capsys) -> None:
    image = tmp_path / "one.png"
    pixels = np.zeros((48, 48, 3), np.uint8)
    pixels[..., 2] = 230
    Image.fromarray(pixels).save(image)
    code, out, err = run_cli(["predict", str(lora_run), "--data", str(image), "--out",
                              str(tmp_path / "one.csv"), "--quiet"], capsys)
    assert code == 0, err
    assert "predicted 1 inputs" in out
    assert len(pd.read_csv(tmp_path / "one.csv")) == 1
    code, _, err = run_cli(["predict", str(lora_run), "--data", str(tmp_path / "nowhere")],
                           capsys)
    assert code == 2 and "nowhere" in err and "does not exist" in err
    code, _, err = run_cli(["predict", str(lora_run), "--data", str(image), "--set", "top_k=3"],
                           capsys)
    assert code == 2 and "'top_k'" in err
    code, _, err = run_cli(["predict", str(tmp_path), "--data", str(image)], capsys)
    assert code == 2 and "not a finished run" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no photos here")
    code, _, err = run_cli(["predict", str(lora_run), "--data", str(empty)], capsys)
    assert code == 2 and "no readable inputs" in err and "readme.md" in err


def test_comparison_view_predicts_and_draws(lora_run: Path, tmp_path: Path) -> None:
    """The notebook's Predict panel: the table and the first inputs drawn beside their
    predictions, with attributions of the predicted class, kept in the view."""
    import asyncio

    from adaptlab.widgets.compare_view import ComparisonView

    folder = write_colour_folder(tmp_path / "new", classes=("a", "b"), per_class=2, seed=3)
    view = ComparisonView(runs=[lora_run])

    async def go():
        return await view.predict(folder, count=2, method="integrated_gradients")

    predictions = asyncio.run(go())
    assert predictions.count == 4
    shown = view.predict_panel.output.value
    assert shown.count("<tr") == 1 + 4  # header and one row per input
    assert shown.count("class='adaptlab-prediction'") == 2
    assert shown.count("data:image/png;base64,") == 2
    assert "integrated_gradients attributions" in shown
    first = predictions.table.iloc[0]
    assert f"{Path(first['path']).name}" in shown and f": {first['prediction']} (p=" in shown
