"""Time-series domain: the gap rule, walk-forward splits, seasonal-naive and MASE arithmetic,
readers for CSV / Parquet / NetCDF files the tests write, and forecasting runs end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adaptlab.data.series import Series, apply_gap_rule, walk_forward_windows
from adaptlab.errors import AdaptlabError
from conftest import run_cli


def _monthly(n: int, start: str = "2000-01", seed: int = 0, trend: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 10 + trend * t + 3 * np.sin(2 * np.pi * t / 12) + 0.3 * rng.standard_normal(n)


def _write_csv(path, columns: dict[str, np.ndarray], start: str = "2000-01"):
    import pandas as pd

    n = len(next(iter(columns.values())))
    frame = pd.DataFrame({"date": pd.period_range(start, periods=n, freq="M").astype(str),
                          **columns})
    frame.to_csv(path, index=False)
    return frame


def test_gap_rule_fills_short_gaps_trims_ends_and_refuses_long_ones():
    values = np.array([np.nan, 1.0, 2.0, np.nan, np.nan, 5.0, 6.0, np.inf])
    filled, first, report = apply_gap_rule(values, "s", max_gap=2)
    assert first == 1 and report.trimmed == 2 and report.filled == 2
    np.testing.assert_allclose(filled, [1, 2, 3, 4, 5, 6])
    with pytest.raises(AdaptlabError, match=r"s: 3 missing values in a row from 2001-02"):
        apply_gap_rule(np.array([1.0, np.nan, np.nan, np.nan, 2.0]), "s", max_gap=2,
                       times=("2001-01", "2001-02", "2001-03", "2001-04", "2001-05"))


def test_walk_forward_never_trains_on_held_out_steps():
    items = [Series("a", _monthly(200).astype(np.float32), 12),
             Series("b", _monthly(150, seed=1).astype(np.float32), 12)]
    windows = walk_forward_windows(items, horizon=6, val_steps=24, test_steps=24,
                                   min_context=24, eval_names={"a"})
    for w in windows["train"]:
        assert w.origin + w.horizon <= len(w.series) - 48  # ends before validation starts
    assert {w.series.name for w in windows["test"]} == {"a"}
    assert min(w.origin for w in windows["test"]) == 176
    assert max(w.origin for w in windows["test"]) == 194  # the last full horizon
    assert all(w.origin + 6 <= 176 for w in windows["val"])
    with pytest.raises(AdaptlabError, match="too few for horizon 100"):
        walk_forward_windows(items, horizon=100, val_steps=24, test_steps=24, min_context=24)


def test_seasonal_naive_and_mase_scale():
    from adaptlab.tasks.forecasting import mase_scale, seasonal_naive

    season = torch.tensor([4])
    context = torch.tensor([[0.0, 0, 1, 2, 3, 4, 1, 2, 3, 4]])
    observed = torch.tensor([[False, False] + [True] * 8])
    forecast = seasonal_naive(context, observed, season, horizon=6)
    assert forecast.tolist() == [[1, 2, 3, 4, 1, 2]]
    assert mase_scale(context, observed, season).tolist() == [1.0]  # periodic: scale 0 -> 1
    trend = torch.arange(10.0).unsqueeze(0)
    assert mase_scale(trend, torch.ones(1, 10, dtype=torch.bool), season).item() == 4.0


def test_csv_reader_regular_grid_and_bad_values(tmp_path):
    from adaptlab_timeseries.readers import ReadLog, read_series

    path = tmp_path / "sites.csv"
    frame = _write_csv(path, {"north": _monthly(60), "south": _monthly(60, seed=2)})
    frame.drop(index=[10]).to_csv(path, index=False)  # one month missing from the file
    log = ReadLog()
    series = read_series(path, log=log)
    assert [s.name for s in series] == ["north", "south"] and series[0].season == 12
    assert len(series[0]) == 60 and np.isfinite(series[0].values).all()
    assert series[0].times[10] == "2000-11" and "1 missing value(s) filled" in log.notes[0]
    np.testing.assert_allclose(series[0].values[10], (frame.north[9] + frame.north[11]) / 2,
                               rtol=1e-5)
    frame = frame.astype({"south": object})
    frame.loc[5, "south"] = "n/a?"
    frame.to_csv(path, index=False)
    with pytest.raises(AdaptlabError, match=r"sites.csv: column 'south' row 6 holds 'n/a\?'"):
        read_series(path)


def test_missing_time_column_and_too_long_horizon_are_named(tmp_path, capsys):
    from adaptlab_timeseries.readers import read_series

    (tmp_path / "values.csv").write_text("flow,level\n1,2\n3,4\n")
    with pytest.raises(AdaptlabError, match=r"values.csv: no time column .*'flow', 'level'"):
        read_series(tmp_path / "values.csv")
    code, _, stderr = run_cli(["run", "timeseries", "--set", "horizon=60", "--out",
                               str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 2 and "horizon 60 is longer than backbone 'fracast-0' forecasts (48" in stderr
    assert not (tmp_path / "run").exists()  # refused before the run folder is written


def test_parquet_reader_matches_csv(tmp_path):
    from adaptlab_timeseries.readers import read_series

    frame = _write_csv(tmp_path / "a.csv", {"flow": _monthly(48)})
    frame.to_parquet(tmp_path / "a.parquet")
    from_csv, from_parquet = read_series(tmp_path / "a.csv"), read_series(tmp_path / "a.parquet")
    np.testing.assert_array_equal(from_csv[0].values, from_parquet[0].values)
    assert from_parquet[0].times == from_csv[0].times


def test_netcdf_reader_area_weights_and_levels(tmp_path):
    import xarray as xr

    from adaptlab_timeseries.readers import read_series

    time = xr.date_range("1990-01-01", periods=36, freq="MS", calendar="noleap",
                         use_cftime=True)
    lat = np.array([0.0, 60.0])
    data = np.zeros((36, 2, 2, 1))
    data[:, :, 0, 0] = 10.0  # equator
    data[:, :, 1, 0] = 40.0  # 60N: cos weight 0.5
    data[:, 1] += 1.0  # second level one degree warmer
    data[7, 0] = np.nan  # one missing month at the first level
    dataset = xr.Dataset({"tas": (("time", "plev", "lat", "lon"), data)},
                         coords={"time": time, "plev": [1000.0, 850.0], "lat": lat, "lon": [0.0]})
    path = tmp_path / "box.nc"
    dataset.to_netcdf(path, engine="h5netcdf")
    series = read_series(path)
    assert [s.name for s in series] == ["tas_plev1000", "tas_plev850"]
    expected = (10 * 1.0 + 40 * 0.5) / 1.5
    np.testing.assert_allclose(series[0].values, expected, rtol=1e-6)  # gap filled by the rule
    np.testing.assert_allclose(series[1].values, expected + 1, rtol=1e-6)
    assert series[0].season == 12 and series[0].times[0] == "1990-01"
    (tmp_path / "broken.nc").write_bytes(b"CDF\x01 not really")
    with pytest.raises(AdaptlabError, match="broken.nc: cannot read as NetCDF4"):
        read_series(tmp_path / "broken.nc")


def test_user_data_long_gap_is_refused_and_named(tmp_path):
    from adaptlab_timeseries.datasets import read_series_data

    values = _monthly(120)
    values[50:60] = np.nan
    _write_csv(tmp_path / "one.csv", {"level": values})
    with pytest.raises(AdaptlabError, match=r"column 'level'.*10 missing values in a row from "
                                            r"2004-03"):
        read_series_data(str(tmp_path / "one.csv"), horizon=6)
    _write_csv(tmp_path / "two.csv", {"level": values, "ok": _monthly(120, seed=3)})
    data = read_series_data(str(tmp_path / "two.csv"), horizon=6)
    assert data.skipped[0]["file"].endswith("two.csv [level]")
    assert {w.series.name for w, _ in data.samples["test"]} == {"ok"}
    with pytest.raises(AdaptlabError, match=r"two.csv \[ok\]: 120 steps are too few for "
                                            r"horizon 40"):
        read_series_data(str(tmp_path / "two.csv"), horizon=40)


def test_demo_split_holds_the_target_model_out():
    from adaptlab_timeseries.datasets import load_cmip6_arctic

    data = load_cmip6_arctic({"seed": 0})
    tested = {w.series.name for w, _ in data.samples["test"]}
    assert tested == {"MIROC6_1000hPa", "MIROC6_925hPa"}
    assert len({w.series.name for w, _ in data.samples["train"]}) > 60
    # 14 series of the 1000 hPa level are masked underground for months at a time: refused
    assert data.skipped and all("missing values in a row" in s["reason"] for s in data.skipped)
    last_train = max(w.series.times[w.origin + w.horizon - 1] for w, _ in data.samples["train"])
    first_val = min(w.series.times[w.origin] for w, _ in data.samples["val"])
    assert last_train < first_val == "2005-01"


@pytest.mark.slow
def test_user_csv_forecast_end_to_end(tmp_path, capsys):
    _write_csv(tmp_path / "sites.csv", {f"site{i}": _monthly(150, seed=i) for i in range(3)})
    out = tmp_path / "run"
    code, stdout, _ = run_cli(["run", "timeseries", "--data", str(tmp_path / "sites.csv"),
                               "--strategy", "head", "--out", str(out), "--device", "cpu",
                               "--epochs", "1", "--set", "horizon=6", "--quiet"], capsys)
    assert code == 0, stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "forecasting" and metrics["split_sizes"]["test"] == 3 * 7
    test = metrics["final"]["test"]
    assert set(test) >= {"mae", "rmse", "mase", "scaled_quantile_loss", "interval_coverage"}
    assert "seasonal_naive" in metrics["reference"]
    code, _, stderr = run_cli(["run", "wildlife", "--set", "horizon=6", "--out",
                               str(tmp_path / "w")], capsys)
    assert code != 0 and "horizon=6: dataset 'animals' has no forecasting task" in stderr


@pytest.mark.slow
def test_demo_adapted_forecaster_beats_zero_shot(tmp_path):
    """The demo's settings (full fine-tuning, 3 epochs) on half its 512 training windows: the
    full run (MASE 0.733 over three seeds against zero-shot 0.750) is in BENCHMARKS and takes
    twice as long."""
    from adaptlab.run import config_for, run

    result = run(config_for("timeseries", strategy="full", out=str(tmp_path / "full"),
                            device="cpu", train_samples=256), progress=False)
    test, zero_shot = result.metrics["final"]["test"], result.metrics["baseline"]["test"]
    naive = result.metrics["reference"]["seasonal_naive"]["test"]
    assert zero_shot["mase"] < naive["mase"]  # the pre-trained model is a real forecaster
    assert test["mase"] < zero_shot["mase"] - 0.005 and test["mae"] < zero_shot["mae"]
    assert result.metrics["split_sizes"]["test"] == 2 * 37  # two levels, 37 origins each


@pytest.mark.slow
def test_demo_lora_runs_and_its_adapter_reloads(tmp_path):
    from adaptlab.run import config_for, run

    result = run(config_for("timeseries", strategy="lora", out=str(tmp_path / "lora"),
                            device="cpu", epochs=1, train_samples=64, lr=1e-3), progress=False)
    assert result.costs["reload_max_abs_diff"] < 1e-5
    assert result.costs["trainable_params"] < 85_001
    naive = result.metrics["reference"]["seasonal_naive"]["test"]
    assert result.metrics["final"]["test"]["mase"] < naive["mase"]


def _class_folders(root, per_class=6, n=120):
    """'rising' series trend upwards, 'flat' ones do not; both share a seasonal cycle."""
    for label, trend in (("flat", 0.0), ("rising", 0.05)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            _write_csv(root / label / f"site{i}.csv",
                       {"a": _monthly(n, seed=i, trend=trend), "b": _monthly(n, seed=50 + i,
                                                                             trend=trend)})
    return root


def test_class_folders_of_series_are_a_classification_set(tmp_path):
    from adaptlab_timeseries.datasets import read_series_data

    root = _class_folders(tmp_path / "sites")
    data = read_series_data(str(root))
    assert data.task == "classification" and data.modality == "series-labelled"
    assert data.class_names == ["flat", "rising"] and sum(data.counts().values()) == 24
    for split in ("val", "test"):  # both series of a file stay in one split
        files = {w.series.origin.rsplit(" [", 1)[0] for w, _ in data.samples[split]}
        others = {w.series.origin.rsplit(" [", 1)[0] for s in data.samples if s != split
                  for w, _ in data.samples[s]}
        assert files and not files & others
    with pytest.raises(AdaptlabError, match="horizon applies to forecasting"):
        read_series_data(str(root), horizon=6)


@pytest.mark.slow
def test_series_classification_runs_and_a_forecaster_is_refused(tmp_path, capsys):
    root = _class_folders(tmp_path / "sites", per_class=8)
    code, _, stderr = run_cli(["run", "timeseries", "--data", str(root), "--out",
                               str(tmp_path / "bad"), "--quiet"], capsys)
    assert code == 2 and "'fracast-0' is a forecaster" in stderr
    code, stdout, _ = run_cli(["run", "timeseries", "--data", str(root), "--backbone",
                               "fracast-features", "--strategy", "head", "--out",
                               str(tmp_path / "ok"), "--epochs", "1", "--quiet"], capsys)
    assert code == 0, stdout
    metrics = json.loads((tmp_path / "ok" / "metrics.json").read_text())
    assert metrics["task"] == "classification" and "accuracy" in metrics["final"]["test"]


@pytest.mark.slow
def test_warming_detection_beats_the_frozen_feature_baseline(tmp_path):
    """Head-only on Fracast features, tested on a held-out climate model (CanESM5)."""
    from adaptlab.run import config_for, run

    result = run(config_for("timeseries", dataset="cmip6-warming", strategy="head", lr=1e-3,
                            device="cpu", out=str(tmp_path / "warming")), progress=False)
    test, baseline = result.metrics["final"]["test"], result.metrics["baseline"]["test"]
    assert result.metrics["split_sizes"]["test"] == 124
    assert test["accuracy"] > 0.58 and test["accuracy"] > baseline["accuracy"] + 0.05


@pytest.mark.slow
def test_a_destructive_adaptation_falls_back_to_the_pretrained_forecaster(tmp_path):
    """Epoch 0 competes for the best epoch: with a learning rate that wrecks the model, the
    run ends on the pre-trained weights and matches the zero-shot baseline exactly."""
    from adaptlab.run import config_for, run

    result = run(config_for("timeseries", dataset="nile", strategy="full", lr=5.0, epochs=2,
                            warmup_ratio=0.0, device="cpu", out=str(tmp_path / "nile")),
                 progress=False)
    metrics = result.metrics
    assert metrics["best_epoch"] == 0 and [h["epoch"] for h in metrics["history"]] == [0, 1, 2]
    assert metrics["history"][1]["val"]["mase"] > metrics["history"][0]["val"]["mase"]
    assert metrics["final"]["test"]["mase"] == pytest.approx(metrics["baseline"]["test"]["mase"],
                                                             rel=1e-6)
