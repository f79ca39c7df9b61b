"""Source-code domain: readers for the formats users keep code in, HF encoder layer maps,
freezing K = L-2 (Telly), and end-to-end runs of classification and retrieval."""

from __future__ import annotations

import json
import subprocess

import pytest

from adaptlab.errors import AdaptlabError
from conftest import run_cli

TOPICS = {
    "maths": "def f{i}(x, y):\n    return x * y + {i} - (x ** 2) / (y + 1)\n",
    "strings": "def f{i}(text):\n    return text.strip().upper().replace('a', '{i}').split(',')\n",
    "files": "def f{i}(path):\n    with open(path) as handle:\n        return handle.read({i})\n",
}


def _labelled_folder(root, per_label=8):
    for label, template in TOPICS.items():
        (root / label).mkdir(parents=True)
        for i in range(per_label):
            (root / label / f"f{i}.py").write_text(template.format(i=i))
    return root


def test_labelled_folder_skips_bad_encodings_and_duplicates(tmp_path, recwarn):
    from adaptlab_code.readers import read_code_data

    root = _labelled_folder(tmp_path / "src")
    latin = root / "strings" / "legacy.py"
    latin.write_bytes("def caf\xe9():\n    return 1\n".encode("latin-1"))
    (root / "maths" / "copy.py").write_text(TOPICS["maths"].format(i=0))  # a duplicate
    data = read_code_data(root)
    assert data.class_names == ["files", "maths", "strings"] and data.modality == "text"
    assert sum(data.counts().values()) == 24  # the duplicate is kept once
    assert data.skipped[0]["file"] == str(latin) and "not valid UTF-8" in data.skipped[0]["reason"]
    assert any(str(latin) in str(w.message) for w in recwarn)


def test_jsonl_classification_and_retrieval(tmp_path):
    from adaptlab_code.readers import read_code_data

    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("\n".join(json.dumps({"code": TOPICS[t].format(i=i), "label": t})
                                  for t in TOPICS for i in range(6)))
    data = read_code_data(labelled)
    assert data.task == "classification" and len(data.class_names) == 3
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"query": f"multiply and shift by {i}",
                                           "code": TOPICS["maths"].format(i=i)})
                               for i in range(20)))
    data = read_code_data(pairs)
    assert data.task == "retrieval" and data.modality == "text-pairs"
    assert sum(data.counts().values()) == 20
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"code": "x = 1", "label": "a"}\n{"snippet": "y"}\n')
    with pytest.raises(AdaptlabError, match="bad.jsonl line 2: expected keys 'code' and 'label'"):
        read_code_data(bad)


def test_git_working_tree_gives_docstring_pairs_from_tracked_files(tmp_path):
    from adaptlab_code.readers import read_code_data

    repo = tmp_path / "repo"
    repo.mkdir()
    body = "\n".join(f'def task{i}(a):\n    """Return the input raised to power {i} plus one."""\n'
                     f"    return a ** {i} + 1\n" for i in range(12))
    (repo / "tracked.py").write_text(body)
    (repo / "untracked.py").write_text('def hidden():\n    """Never listed by git at all."""\n')
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "tracked.py"], check=True)
    data = read_code_data(repo)
    texts = [pair for split in data.samples.values() for pair, _ in split]
    assert len(texts) == 12 and all("hidden" not in code for _, code in texts)


def test_minilm_layer_map_and_telly_freezing():
    from adaptlab.backbones.hf_encoders import minilm
    from adaptlab.strategies.base import count_parameters
    from adaptlab.strategies.registry import get_strategy_class
    from adaptlab.tasks.classification import build_model

    backbone = minilm()
    assert backbone.layer_map.num_blocks == 6
    strategy = get_strategy_class("freeze").from_options({"k": -2})
    model, layer_map = build_model(backbone, 3, strategy.config)
    strategy.setup(model, layer_map)
    top_two = sum(p.numel() for name, p in model.named_parameters()
                  if name.startswith(("backbone.encoder.encoder.layer.4.",
                                      "backbone.encoder.encoder.layer.5.", "task_head.")))
    assert count_parameters(model)[0] == top_two
    assert not any("pooler" in name for name, _ in model.named_parameters())


@pytest.mark.slow
def test_module_classification_demo_beats_frozen_features(tmp_path, capsys):
    """The default demo: MiniLM with Telly's freezing (all but the top two layers) learns to
    tell 31 standard-library modules apart from code alone."""
    out = tmp_path / "demo"
    code, _, err = run_cli(["run", "code", "--device", "cpu", "--out", str(out), "--quiet"],
                           capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["final"]["test"]
    assert metrics["task"] == "classification" and len(metrics["class_names"]) == 31
    # The frozen-feature baseline: nearest-class-mean on the unadapted MiniLM embeddings.
    assert test["accuracy"] > metrics["baseline"]["test"]["accuracy"] + 0.02
    assert test["macro_f1"] > metrics["baseline"]["test"]["macro_f1"]


@pytest.mark.slow
def test_retrieval_runs_end_to_end_with_lora(tmp_path, capsys):
    out = tmp_path / "lora"
    code, _, err = run_cli(["run", "code", "--dataset", "docstring-to-code",
                            "--strategy", "lora", "--set", "r=4",
                            "--set", "train_samples=64", "--epochs", "1", "--device", "cpu",
                            "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    costs = json.loads((out / "costs.json").read_text())
    assert metrics["task"] == "retrieval" and metrics["split_sizes"]["test"] == 164
    assert costs["reload_max_abs_diff"] < 1e-5
    # Chance MRR over 164 candidates is about 0.03, and the unadapted MiniLM (the run's own
    # baseline, same candidates) is already near 0.85: only beating it shows adaptation.
    assert metrics["final"]["test"]["mrr"] > metrics["baseline"]["test"]["mrr"]
