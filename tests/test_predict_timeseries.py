"""Predicting with a finished time-series run: forecasts of the run's own test split give back
its reported test metrics (recomputed here from the table and the data file), forecasts of a
new file continue its time stamps in its own units, series too short are named, and series
to classify are cut as the run's training cut them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from adaptlab.errors import AdaptlabError
from conftest import run_cli

pytestmark = pytest.mark.slow

HORIZON = 3


def _monthly_csv(path, start: str, columns: dict[str, np.ndarray], stamp: str = "%Y-%m"):
    months = pd.period_range(start, periods=len(next(iter(columns.values()))), freq="M")
    stamps = [m.strftime(stamp) if stamp != "end" else m.end_time.strftime("%Y-%m-%d")
              for m in months]
    pd.DataFrame({"date": stamps, **columns}).to_csv(path, index=False)
    return path


def _seasonal(n: int, level: float, amplitude: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return level + amplitude * np.sin(2 * np.pi * t / 12) + 0.1 * amplitude * rng.standard_normal(n)


@pytest.fixture(scope="module")
def forecast_run(tmp_path_factory):
    """One tiny head-only run on a monthly CSV (the quickest forecasting run there is)."""
    from adaptlab.config import RunConfig
    from adaptlab.run import run

    root = tmp_path_factory.mktemp("forecast")
    data = _monthly_csv(root / "levels.csv", "2000-01", {"level": _seasonal(72, 500, 50)})
    run(RunConfig(domain="timeseries", data=str(data), strategy="head", device="cpu", epochs=1,
                  horizon=HORIZON, train_samples=4, batch_size=4, out=str(root / "run")),
        progress=False)
    return root / "run", data


def test_test_split_predictions_give_the_runs_test_metrics(forecast_run, tmp_path):
    from adaptlab.run_loading import load_run

    run_dir, data = forecast_run
    table = load_run(run_dir, device="cpu").predict(split="test", out=tmp_path / "test.csv").table
    truth = pd.read_csv(data, dtype={"date": str}).set_index("date")["level"]
    values = truth.to_numpy()
    maes, mses, mases = [], [], []
    for _, window in table.groupby("series", sort=False):
        window = window.sort_values("step")
        assert window.step.tolist() == list(range(1, HORIZON + 1))
        actual = truth.loc[window.time].to_numpy()
        np.testing.assert_allclose(window.actual, actual, rtol=1e-6)
        error = window["median"].to_numpy() - actual
        context = values[:truth.index.get_loc(window.time.iloc[0])]  # all before the origin
        scale = np.abs(context[12:] - context[:-12]).mean()  # in-sample seasonal naive, m = 12
        maes.append(np.abs(error).mean())
        mses.append((error ** 2).mean())
        mases.append(maes[-1] / scale)
    reported = json.loads((run_dir / "metrics.json").read_text())["final"]["test"]
    assert len(maes) == reported["samples"] == 4  # horizon + 1 origins in the test span
    assert np.mean(maes) == pytest.approx(reported["mae"], rel=1e-4)
    assert np.mean(mases) == pytest.approx(reported["mase"], rel=1e-4)
    assert np.sqrt(np.mean(mses)) == pytest.approx(reported["rmse"], rel=1e-4)


def test_forecasts_continue_the_files_time_stamps_in_its_units(forecast_run, tmp_path):
    from adaptlab.run_loading import load_run

    run = load_run(forecast_run[0], device="cpu", with_data=False)  # no training data needed
    months = _monthly_csv(tmp_path / "new.csv", "2001-01", {"a": _seasonal(120, 1000, 20),
                                                             "b": _seasonal(120, 1000, 5, 1)})
    table = run.predict(months, out=tmp_path / "new_forecast.csv").table
    expected = pd.period_range("2011-01", periods=HORIZON, freq="M").astype(str).tolist()
    for name in ("a", "b"):
        rows = table[table.series == name]
        assert rows.time.tolist() == expected and rows.step.tolist() == [1, 2, 3]
    quantiles = table[[c for c in table.columns if c.startswith("q")]]
    assert list(quantiles.columns) == [f"q{level / 10:g}" for level in range(1, 10)]
    forecasts = table[["median", *quantiles.columns]].to_numpy()
    assert np.isfinite(forecasts).all()
    assert (np.abs(forecasts - 1000) < 100).all()  # the data's units, not the model's 0..1

    month_end = _monthly_csv(tmp_path / "month_end.csv", "2001-01", {"a": _seasonal(120, 10, 2)},
                             stamp="end")
    ends = [m.end_time.strftime("%Y-%m-%d") for m in
            pd.period_range("2011-01", periods=HORIZON, freq="M")]
    assert run.predict(month_end, out=tmp_path / "ends.csv").table.time.tolist() == ends
    pd.DataFrame({"year": range(1901, 1971), "flow": _seasonal(70, 900, 90)}).to_csv(
        tmp_path / "yearly.csv", index=False)
    yearly = run.predict(tmp_path / "yearly.csv", out=tmp_path / "yearly_forecast.csv").table
    assert yearly.time.astype(str).tolist() == ["1971", "1972", "1973"]


def test_a_series_shorter_than_the_context_is_named(forecast_run, tmp_path):
    from adaptlab.run_loading import load_run

    run = load_run(forecast_run[0], device="cpu", with_data=False)
    short = np.full(120, np.nan)
    short[-30:] = _seasonal(30, 50, 5)  # 30 observed steps; the run's contexts start at 48
    path = _monthly_csv(tmp_path / "mixed.csv", "2001-01", {"long": _seasonal(120, 50, 5),
                                                            "short": short})
    result = run.predict(path, out=tmp_path / "mixed_forecast.csv")
    assert set(result.table.series) == {"long"}
    assert len(result.skipped) == 1 and result.skipped[0]["file"].endswith("mixed.csv [short]")
    assert "30 steps, fewer than the 48-step context" in result.skipped[0]["reason"]
    assert (tmp_path / "mixed_forecast.skipped.csv").is_file()
    only_short = _monthly_csv(tmp_path / "short.csv", "2001-01", {"short": short[-30:]})
    with pytest.raises(AdaptlabError, match=r"short.csv: no readable inputs \(.*short.csv "
                                            r"\[short\]: 30 steps, fewer than the 48-step"):
        run.predict(only_short, out=tmp_path / "none.csv")


def test_cli_predicts_a_csv_and_refuses_a_file_it_cannot_read(forecast_run, tmp_path, capsys):
    data = _monthly_csv(tmp_path / "sites.csv", "2001-01", {"site": _seasonal(60, 20, 3)})
    out = tmp_path / "sites_forecast.csv"
    code, stdout, _ = run_cli(["predict", str(forecast_run[0]), "--data", str(data), "--out",
                               str(out), "--device", "cpu", "--quiet"], capsys)
    assert code == 0 and f"predicted 1 inputs: {out}" in stdout
    table = pd.read_csv(out)
    assert table.time.tolist() == ["2006-01", "2006-02", "2006-03"]
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    code, _, stderr = run_cli(["predict", str(forecast_run[0]), "--data",
                               str(tmp_path / "photo.png"), "--quiet"], capsys)
    assert code == 2 and "photo.png: not a series file" in stderr


@pytest.mark.parametrize("preprocessing, expected", [
    ({"clip_steps": 240, "clip_stride": 12}, "clips"),
    ({"min_steps": 200}, "whole"),
])
def test_series_to_classify_are_cut_as_training_cut_them(tmp_path, preprocessing, expected):
    """No training needed: the reader sees only the run's data description."""
    from adaptlab_timeseries.predict_inputs import read_prediction_series

    for label, years in (("early", 30), ("recent", 10)):  # class folders: names ignored
        (tmp_path / label).mkdir()
        _monthly_csv(tmp_path / label / "ta.csv", "2000-01", {"ta": _seasonal(12 * years, 250, 9)})
    run = SimpleNamespace(config=SimpleNamespace(max_gap=None), data=SimpleNamespace(
        modality="series-labelled", preprocessing=preprocessing))
    inputs = read_prediction_series(tmp_path, run)
    long_name = f"{tmp_path / 'early' / 'ta.csv'}:ta"
    if expected == "clips":  # 20-year clips a year apart, the last ending at the last month
        assert len(inputs.samples) == (360 - 240) // 12 + 1
        assert inputs.names[-1] == f"{long_name} 2010-01..2029-12"
        assert all(len(w.context(2048)) == 240 for w, _ in inputs.samples)
        reason = "120 steps, shorter than the 240-step clips"
    else:
        assert inputs.names == [long_name]
        assert len(inputs.samples[0][0].context(2048)) == 360
        reason = "120 steps, shorter than its shortest series (200 steps)"
    assert inputs.skipped == [{"file": f"{tmp_path / 'recent' / 'ta.csv'}:ta",
                               "reason": f"{reason} the run was trained on"}]


def test_forecaster_exports_to_onnx_with_the_runs_forecasts(forecast_run, tmp_path):
    """The merged folder and its ONNX graph give the run's quantiles (in the model's scaled
    units, below 1 here, so the bound is absolute) for windows of the test split."""
    from export_checks import TOLERANCE, export_and_compare, held_out

    reference = held_out(forecast_run[0])
    assert reference[0][1][0].shape[1:] == (HORIZON, 9)  # horizon x nine quantiles
    check = export_and_compare(forecast_run[0], tmp_path / "export", "onnx", reference)
    assert {"context", "observed"} <= set(check.graph_inputs)
    assert check.config["adaptlab"]["task_spec"]["horizon"] == HORIZON
    assert check.differences["folder"] < TOLERANCE and check.differences["onnx"] < TOLERANCE


# -- series classification: the run's own test split --------------------------------------
TREND = 0.02  # per month: 2.4 over ten years, beside a seasonal swing of +-3 and noise of 1


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    """Ten years of monthly series in class folders, 'rising' ones with a weak trend under
    noise; both classes' files have the same names (site0.csv ...), so a row is told from
    another only by its class folder. Head only on Fracast features, one epoch: half a minute on two cores."""
    from adaptlab.config import RunConfig
    from adaptlab.run import run

    root = tmp_path_factory.mktemp("series-classes")
    rng = np.random.default_rng(0)
    steps = np.arange(120)
    for label, trend in (("flat", 0.0), ("rising", TREND)):
        (root / "sites" / label).mkdir(parents=True)
        for i in range(8):
            columns = {c: 10 + trend * steps + 3 * np.sin(2 * np.pi * steps / 12)
                       + rng.standard_normal(120) for c in "ab"}
            _monthly_csv(root / "sites" / label / f"site{i}.csv", "2000-01", columns)
    run(RunConfig(domain="timeseries", data=str(root / "sites"), backbone="fracast-features",
                  strategy="head", device="cpu", epochs=1, lr=1e-3, out=str(root / "run")),
        progress=False)
    return root / "run"


def test_classification_test_split_predictions_give_the_runs_test_metrics(classify_run,
                                                                          tmp_path):
    from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

    from adaptlab.run_loading import load_run

    load_run(classify_run, device="cpu").predict(split="test", out=tmp_path / "test.csv")
    table = pd.read_csv(tmp_path / "test.csv")
    reported = json.loads((classify_run / "metrics.json").read_text())["final"]["test"]
    assert len(table) == reported["samples"] == 8  # 2 files per class, 2 series each
    assert table["path"].is_unique
    # Each row's class from its file's folder (flat/site3/a ...), not from the table's label.
    truth = table["path"].str.extract(r"^(flat|rising)/site\d/[ab] ", expand=False)
    assert truth.notna().all() and list(table["label"]) == list(truth)
    probabilities = table[["probability_flat", "probability_rising"]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert list(table["prediction"]) == [["flat", "rising"][i] for i in probabilities.argmax(1)]
    predicted = table["prediction"]
    assert accuracy_score(truth, predicted) == pytest.approx(reported["accuracy"], abs=1e-9)
    assert f1_score(truth, predicted, average="macro") == pytest.approx(reported["macro_f1"],
                                                                        abs=1e-9)
    per_class = f1_score(truth, predicted, average=None, labels=["flat", "rising"])
    assert list(per_class) == pytest.approx(list(reported["per_class_f1"].values()), abs=1e-9)
    assert cohen_kappa_score(truth, predicted) == pytest.approx(reported["kappa"], abs=1e-9)
    assert roc_auc_score(truth == "rising", table["probability_rising"]) == pytest.approx(
        reported["auc"], abs=1e-9)
