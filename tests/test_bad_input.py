"""Every bad input stops with one line naming the path, key or value, exits non-zero, and
leaves an earlier run folder untouched."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import FAST, run_cli, tree_digest, write_colour_folder


@pytest.fixture
def earlier_run(tmp_path):
    """A folder standing for an earlier run; its bytes must survive every refused command."""
    run_dir = tmp_path / "earlier"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"domain": "wildlife"}\n')
    (run_dir / "metrics.json").write_text('{"final": {}}\n')
    return run_dir


def _refused(capsys, argv, *fragments):
    code, out, err = run_cli(argv, capsys)
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_missing_data_folder(tmp_path, capsys, earlier_run):
    before = tree_digest(earlier_run)
    missing = tmp_path / "nowhere"
    _refused(capsys, ["run", "wildlife", "--data", str(missing), "--out",
                      str(tmp_path / "new")] + FAST, str(missing), "does not exist")
    assert not (tmp_path / "new").exists()
    assert tree_digest(earlier_run) == before


def test_empty_folder_and_one_class(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(capsys, ["run", "wildlife", "--data", str(empty), "--out", str(tmp_path / "a")]
             + FAST, str(empty), "is empty")
    one = write_colour_folder(tmp_path / "one", classes=("red",))
    _refused(capsys, ["run", "wildlife", "--data", str(one), "--out", str(tmp_path / "b")]
             + FAST, str(one), "one class", "'red'")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("argv, fragments", [
    (["--backbone", "resnet9000"], ["unknown backbone 'resnet9000'"]),
    (["--strategy", "magic"], ["unknown strategy 'magic'"]),
    (["--set", "colour=blue"], ["--set colour: unknown key"]),
    (["--set", "lr=fast"], ["lr='fast' is not a valid float"]),
    (["--epochs", "-1"], ["epochs=-1 is below the minimum 1"]),
    (["--strategy", "freeze", "--set", "k=40"], ["k=40 is out of range", "16 blocks"]),
    (["--strategy", "lora", "--set", "r=0"], ["r=0 is below the minimum 1"]),
    (["--set", "batch_size"], ["expected KEY=VALUE"]),
])
def test_bad_values_name_the_key(tmp_path, capsys, colour_folder, earlier_run, argv, fragments):
    before = tree_digest(earlier_run)
    _refused(capsys, ["run", "wildlife", "--data", str(colour_folder), "--out",
                      str(tmp_path / "new")] + FAST + argv, *fragments)
    assert not (tmp_path / "new").exists()
    assert tree_digest(earlier_run) == before


def test_existing_run_folder_is_not_overwritten(capsys, colour_folder, earlier_run):
    before = tree_digest(earlier_run)
    _refused(capsys, ["run", "wildlife", "--data", str(colour_folder), "--out",
                      str(earlier_run)] + FAST, str(earlier_run), "already holds a run")
    assert tree_digest(earlier_run) == before


def test_unknown_domain(capsys, tmp_path):
    _refused(capsys, ["run", "volcanoes", "--out", str(tmp_path / "x")], "unknown domain "
             "'volcanoes'")


@pytest.mark.slow
def test_corrupt_image_is_skipped_named_and_counted(tmp_path, capsys, recwarn):
    data = write_colour_folder(tmp_path / "data")
    corrupt = data / "green" / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    note = data / "blue" / "notes.txt"
    note.write_text("field notes, not an image")
    out = tmp_path / "run"
    code, _, err = run_cli(["run", "wildlife", "--data", str(data), "--out", str(out)] + FAST,
                           capsys)
    assert code == 0, err
    warned = " ".join(str(w.message) for w in recwarn)
    assert str(corrupt) in warned and str(note) in warned
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_inputs"]["count"] == 2
    assert {f["file"] for f in metrics["skipped_inputs"]["files"]} == {str(corrupt), str(note)}
    shutil.rmtree(out)


def test_untrusted_pickle_is_never_executed(tmp_path, capsys, colour_folder):
    import pickle

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    weights = tmp_path / "evil.pth"
    weights.write_bytes(pickle.dumps({"state_dict": Exploit()}))
    _refused(capsys, ["run", "wildlife", "--data", str(colour_folder), "--out",
                      str(tmp_path / "r"), "--set", f"backbone_weights={weights}"] + FAST,
             str(weights), "cannot be read")
    assert not marker.exists()


def test_traceback_only_with_debug(tmp_path, capsys):
    argv = ["run", "wildlife", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["--debug", *argv], capsys)
    assert code == 2 and "Traceback" in err and "nowhere" in err.strip().splitlines()[-1]
