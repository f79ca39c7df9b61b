"""Predictions of source-code runs: a loose folder of files is classified (binary and non-source
files skipped and listed), retrieval ranks each query's top-k documents, and on a run's own
test split the table gives back the MRR and recall@k the run reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score

from adaptlab.config import RunConfig
from adaptlab.errors import AdaptlabError
from adaptlab.run import run
from adaptlab.run_loading import load_run
from conftest import run_cli

pytestmark = pytest.mark.slow

TOPICS = {
    "maths": "def f{i}(x, y):\n    return x * y + {i}\n",
    "strings": "def f{i}(text):\n    return text.strip().upper()[{i}:]\n",
    "files": "def f{i}(path):\n    return open(path).read({i})\n",
}
# Confusable pairs (60 = 10 actions x 6 containers), so ranks vary and MRR is not trivially 1.
ACTIONS = [("add one to", "x + 1"), ("double", "x * 2"), ("negate", "-x"), ("square", "x ** 2"),
           ("halve", "x / 2"), ("uppercase", "x.upper()"), ("strip", "x.strip()"),
           ("reverse", "x[::-1]"), ("lowercase", "x.lower()"), ("measure", "len(x)")]
CONTAINERS = [("list", "[{} for x in xs]"), ("set", "{{{} for x in xs}}"),
              ("tuple", "tuple({} for x in xs)"), ("sorted list", "sorted({} for x in xs)"),
              ("generator", "({} for x in xs)"), ("dict", "{{x: {} for x in xs}}")]


def _pairs() -> list[dict[str, str]]:
    return [{"query": f"{action} each item, giving a {name}",
             "code": f"def transform(xs):\n    return {container.format(expression)}\n"}
            for action, expression in ACTIONS for name, container in CONTAINERS]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("code-classify")
    for label, template in TOPICS.items():
        (root / "data" / label).mkdir(parents=True)
        for i in range(8):
            (root / "data" / label / f"f{i}.py").write_text(template.format(i=i))
    config = RunConfig(domain="code", data=str(root / "data"), strategy="head", device="cpu",
                       epochs=1, batch_size=8, train_samples=6, out=str(root / "run"))
    run(config, progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def retriever(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("code-retrieve")
    (root / "pairs.jsonl").write_text("\n".join(json.dumps(pair) for pair in _pairs()))
    config = RunConfig(domain="code", data=str(root / "pairs.jsonl"), strategy="head",
                       device="cpu", epochs=1, batch_size=8, train_samples=8, out=str(root / "run"))
    run(config, progress=False)
    return root / "run"


def test_loose_source_folder_is_classified(classifier: Path, tmp_path: Path, capsys) -> None:
    """Files in no class folder, or in one whose name is ignored; a binary file, a NUL-holding
    file and a non-source file are skipped and listed; the training data is not needed."""
    new = tmp_path / "new"
    (new / "maths").mkdir(parents=True)
    (new / "a.py").write_text("def area(r):\n    return 3.14 * r * r\n")
    (new / "b.js").write_text("function shout(s) { return s.toUpperCase(); }\n")
    (new / "maths" / "c.py").write_text("def head(path):\n    return open(path).read(10)\n")
    (new / "blob.py").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    (new / "nul.py").write_bytes(b"x = 1\x00\x00")
    (new / "notes.md").write_text("# not code\n")
    out = tmp_path / "out.csv"
    code, printed, err = run_cli(["predict", str(classifier), "--data", str(new), "--out",
                                  str(out), "--quiet"], capsys)
    assert code == 0, err
    table = pd.read_csv(out)
    assert list(table["path"]) == [str(new / "a.py"), str(new / "b.js"), str(new / "maths/c.py")]
    assert list(table.columns) == ["path", "prediction", *(f"probability_{c}"
                                                           for c in sorted(TOPICS))]
    probabilities = table[[f"probability_{c}" for c in sorted(TOPICS)]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    skipped = pd.read_csv(tmp_path / "out.skipped.csv")
    assert sorted(skipped["file"]) == sorted(str(new / n) for n in ("blob.py", "notes.md", "nul.py"))
    assert "not valid UTF-8" in skipped.set_index("file").loc[str(new / "blob.py"), "reason"]
    assert "skipped 3 unreadable inputs" in printed


def test_jsonl_and_own_split_classified(classifier: Path, tmp_path: Path) -> None:
    """A JSONL as training reads it, labels ignored (rows named file:line or id); the run's own
    test split recomputes to the reported accuracy."""
    records = tmp_path / "more.jsonl"
    records.write_text(json.dumps({"code": "def g(a, b):\n    return a * b\n", "label": "maths"})
                       + "\n\n" + json.dumps({"code": "def h(t):\n    return t.lower()\n",
                                              "id": "lower"}) + "\n")
    loaded = load_run(classifier)
    table = loaded.predict(records, out=tmp_path / "more.csv").table
    assert list(table["path"]) == [f"{records}:1", "lower"] and "label" not in table.columns
    own = loaded.predict(split="test", out=tmp_path / "test.csv").table
    reported = loaded.metrics["final"]["test"]
    assert len(own) == reported["samples"]
    assert accuracy_score(own["label"], own["prediction"]) == pytest.approx(reported["accuracy"],
                                                                             abs=1e-9)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"code": "x = 1"}\n{"snippet": "y"}\n')
    with pytest.raises(AdaptlabError, match="bad.jsonl line 2: expected key 'code'"):
        loaded.predict(bad)


def _ranks_from_table(table: pd.DataFrame) -> np.ndarray:
    """Each query's own document's rank among all scored documents (ties counted in its
    favour, as evaluation counts them)."""
    ranks = []
    for _, rows in table.groupby("answer", sort=False):
        own = rows.loc[rows["document"] == rows["answer"], "score"].item()
        ranks.append(1 + int((rows["score"] > own).sum()))
    return np.array(ranks)


def test_own_test_split_gives_the_reported_retrieval_metrics(retriever: Path, tmp_path: Path):
    loaded = load_run(retriever)
    reported = loaded.metrics["final"]["test"]
    pool = reported["samples"]
    # Every document of the split scored (the pool evaluation ranks), in the run's batch size.
    table = loaded.predict(split="test", out=tmp_path / "all.csv", batch_size=8,
                           options={"top_k": 10_000}).table
    assert len(table) == pool * pool
    assert list(table.columns) == ["query", "rank", "document", "score", "snippet", "answer"]
    ranks = _ranks_from_table(table)
    assert len(ranks) == pool
    assert reported["mrr"] < 1.0  # confusable pairs: ranks other than 1 are recomputed too
    assert (1 / ranks).mean() == pytest.approx(reported["mrr"], abs=1e-6)
    assert float(np.median(ranks)) == pytest.approx(reported["median_rank"])
    for k in (1, 5, 10):
        assert (ranks <= k).mean() == pytest.approx(reported[f"recall_at_{k}"], abs=1e-6)
    # The default keeps each query's best five, best first.
    top = loaded.predict(split="test", out=tmp_path / "top.csv").table
    assert len(top) == 5 * pool
    for query, rows in top.groupby("answer", sort=False):
        assert list(rows["rank"]) == [1, 2, 3, 4, 5]
        assert rows["score"].is_monotonic_decreasing
        best = table[table["answer"] == query].sort_values("score", ascending=False)
        assert list(rows["document"]) == list(best["document"][:5])


def test_new_queries_against_given_code(retriever: Path, tmp_path: Path, capsys) -> None:
    """Queries with their code (known answers), a query alone and code alone in one JSONL;
    then plain-text queries searched in a source folder given as the corpus."""
    pairs = _pairs()
    lines = [{**pairs[0], "id": "p0"}, pairs[13], {"query": "square every item"},
             {"code": pairs[40]["code"]}]
    queries = tmp_path / "queries.jsonl"
    queries.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    loaded = load_run(retriever, with_data=False)
    table = loaded.predict(queries, out=tmp_path / "q.csv", options={"top_k": 2}).table
    names = ["p0", f"{queries}:2", f"{queries}:3"]
    assert list(table["query"]) == [name for name in names for _ in range(2)]
    assert list(table["rank"]) == [1, 2] * 3
    assert set(table["document"]) <= {"p0", f"{queries}:2", f"{queries}:4"}
    assert list(table["answer"].fillna("")) == ["p0"] * 2 + [f"{queries}:2"] * 2 + [""] * 2
    with pytest.raises(AdaptlabError, match="top_k=0: a whole number"):
        loaded.predict(queries, options={"top_k": 0})

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "helpers.py").write_text('import os\n\n\ndef double(xs):\n    """Twice."""\n'
                                       "    return [x * 2 for x in xs]\n\n\n"
                                       "def shout(xs):\n    return [x.upper() for x in xs]\n")
    (corpus / "tool.js").write_text("const flip = (xs) => xs.reverse();\n")
    (corpus / "blob.py").write_bytes(b"\xff\xfe\x00binary")
    asks = tmp_path / "asks.txt"
    asks.write_text("double each item\n\nuppercase each item\n")
    out = tmp_path / "asks.csv"
    code, _, err = run_cli(["predict", str(retriever), "--data", str(asks), "--out", str(out),
                            "--set", f"corpus={corpus}", "--set", "top_k=3", "--quiet"], capsys)
    assert code == 0, err
    table = pd.read_csv(out)
    assert list(table["query"]) == [f"{asks}:1"] * 3 + [f"{asks}:3"] * 3
    # Python files give one document per function (at its def line), other files one each.
    documents = {f"{corpus / 'helpers.py'}:4", f"{corpus / 'helpers.py'}:9", str(corpus / "tool.js")}
    assert set(table["document"]) == documents and "answer" not in table.columns
    assert "Twice" not in " ".join(table["snippet"])  # documents hold code without docstrings
    skipped = pd.read_csv(tmp_path / "asks.skipped.csv")
    assert list(skipped["file"]) == [str(corpus / "blob.py")]
    with pytest.raises(AdaptlabError, match="no documents to search"):
        loaded.predict(asks)


# -- the same runs exported (``adaptlab export``): outputs compared with the run's own ------
def test_classifier_exports_to_torchscript_with_the_runs_outputs(classifier: Path, tmp_path):
    """The merged folder and its traced module give the run's logits, at sequence lengths
    the trace never saw (each row alone is padded to its own length)."""
    from export_checks import TOLERANCE, export_and_compare, held_out

    reference = held_out(classifier)
    assert len({inputs["input_ids"].shape[1] for inputs, _ in reference}) > 1
    check = export_and_compare(classifier, tmp_path / "export", "torchscript", reference)
    assert check.config["adaptlab"]["inputs"] == ["input_ids", "attention_mask"]
    assert (tmp_path / "export" / "tokenizer" / "tokenizer_config.json").is_file()
    assert check.differences["folder"] < TOLERANCE
    assert check.differences["torchscript"] < TOLERANCE


def test_retriever_exports_to_onnx_with_the_runs_embeddings(retriever: Path, tmp_path):
    """Queries and documents are separate inputs, each with its own sequence length."""
    from export_checks import TOLERANCE, export_and_compare, held_out

    reference = held_out(retriever)
    batch = reference[0][0]
    assert batch["query"]["input_ids"].shape[1] != batch["document"]["input_ids"].shape[1]
    check = export_and_compare(retriever, tmp_path / "export", "onnx", reference)
    assert check.graph_inputs == ["query_input_ids", "query_attention_mask",
                                  "document_input_ids", "document_attention_mask"]
    assert check.config["adaptlab"]["merged"] is True
    assert check.differences["folder"] < TOLERANCE and check.differences["onnx"] < TOLERANCE
