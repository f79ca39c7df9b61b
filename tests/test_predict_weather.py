"""Predicting with weather runs: fields predicted as NetCDF on the input's own grid and time
stamps, the run's own test split recomputed into its metrics, new inputs taken as anomalies
against the run's training climatology, another grid refused by name, and event
classification on fields without labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from adaptlab.cli import main
from adaptlab.errors import AdaptlabError
from adaptlab_weather import scenarios  # part of the install: broken fails, never skips

pytestmark = pytest.mark.slow

HISTORY = 3  # the scenario windows: three years in, the year after out


@pytest.fixture(scope="module")
def e1_run(tmp_path_factory) -> Path:
    from adaptlab.config import RunConfig
    from adaptlab.run import run

    out = tmp_path_factory.mktemp("e1") / "run"
    run(RunConfig(domain="weather", dataset="scenario-e1", device="cpu", epochs=1,
                  train_samples=8, batch_size=8, out=str(out)), progress=False)
    return out


def _training_climatology() -> xr.DataArray:
    """The E1 file's 1860-1899 mean per grid point, computed here from the file itself."""
    data = xr.open_dataset(scenarios.sample_file("E1_north_america.nc"), engine="h5netcdf")
    years = np.array([t.year for t in data["time"].values])
    return data["air_temperature"].isel(time=(years >= 1860) & (years <= 1899)).mean("time")


def _fields_file(path: Path, values: np.ndarray, lat, lon, start: str = "2100",
                 variable: str = "air_temperature") -> Path:
    times = pd.date_range(start, periods=len(values), freq="YS").values
    xr.Dataset({variable: (("time", "lat", "lon"), values.astype("float32"), {"units": "K"})},
               coords={"time": times, "lat": ("lat", lat, {"units": "degrees_north"}),
                       "lon": ("lon", lon, {"units": "degrees_east"})}
               ).to_netcdf(path, engine="h5netcdf")
    return path


def test_own_test_split_recomputes_the_runs_metrics(e1_run, tmp_path):
    from adaptlab.run_loading import load_run

    run = load_run(e1_run, device="cpu")
    result = run.predict(split="test", out=tmp_path / "test.csv")
    reported = json.loads((e1_run / "metrics.json").read_text())["final"]["test"]
    fields = xr.open_dataset(tmp_path / "test.nc", engine="h5netcdf")
    predicted = fields["air_temperature_anomaly"].values.astype(np.float64)
    truth = fields["air_temperature_anomaly_target"].values.astype(np.float64)
    loaded = np.stack([target[0] for _, target in run.data.samples["test"]])
    assert np.array_equal(truth, loaded)  # the loader's true fields, in split order
    assert predicted.shape == truth.shape == (reported["samples"], 37, 49)
    weights = np.cos(np.deg2rad(fields["lat"].values))[:, None]
    weights /= weights.mean()
    error = predicted - truth
    assert np.sqrt((weights * error ** 2).mean()) == pytest.approx(reported["rmse"], rel=1e-5)
    assert (weights * np.abs(error)).mean() == pytest.approx(reported["mae"], rel=1e-5)
    table = result.table
    assert len(table) == reported["samples"] and table["path"][0] == "test sample 0"
    assert table["area_mean"][3] == pytest.approx((weights * predicted[3]).mean(), rel=1e-4)
    assert table["max"][3] == pytest.approx(predicted[3].max(), rel=1e-4)


def test_a_file_on_the_runs_grid_is_predicted_on_its_own_coordinates(e1_run, tmp_path,
                                                                     capsys):
    grid = json.loads((e1_run / "data.json").read_text())["coords"]
    climatology = _training_climatology().values
    # Planted: each year the training climatology plus 0.5 K per year.
    offsets = 0.5 * np.arange(6, dtype=np.float32)
    new = _fields_file(tmp_path / "future.nc", climatology + offsets[:, None, None],
                       grid["lat"], grid["lon"])
    out = tmp_path / "out" / "future.csv"
    # The CLI rebuilds the run from data.json alone (no training data read).
    assert main(["predict", str(e1_run), "--data", str(new), "--out", str(out), "--quiet",
                 "--device", "cpu"]) == 0
    given = xr.open_dataset(new, engine="h5netcdf")
    predicted = xr.open_dataset(out.with_suffix(".nc"), engine="h5netcdf")
    for name in ("time", "lat", "lon"):
        assert predicted[name].dtype == given[name].dtype
        assert np.array_equal(predicted[name].values, given[name].values), name
    values = predicted["air_temperature_anomaly"]
    assert values.dims == ("time", "lat", "lon") and values.attrs["units"] == "K"
    assert np.isnan(values.values[:HISTORY - 1]).all()  # no full window behind them
    assert np.isfinite(values.values[HISTORY - 1:]).all()
    table = pd.read_csv(out)
    stamps = [str(t)[:19] for t in given["time"].values[HISTORY - 1:]]
    assert table["path"].tolist() == [f"{new}:{stamp}" for stamp in stamps]
    assert table["netcdf"].unique().tolist() == [str(out.with_suffix(".nc"))]


def test_new_inputs_are_anomalies_from_the_runs_training_climatology(e1_run, tmp_path):
    from adaptlab.run_loading import load_run
    from adaptlab_weather.predict_inputs import read_field_inputs

    run = load_run(e1_run, device="cpu")
    grid = run.data.coords
    offsets = np.array([2.0, 2.5, 3.0, 3.5], dtype=np.float32)
    new = _fields_file(tmp_path / "warm.nc", _training_climatology().values
                       + offsets[:, None, None], grid["lat"], grid["lon"])
    inputs = read_field_inputs(new, run)
    # Against the file's own mean these would centre on zero; against the run's they are the
    # planted offsets, day by day.
    assert len(inputs.samples) == 2
    for (window, _), end in zip(inputs.samples, (2, 3), strict=True):
        assert window.shape == (HISTORY, 37, 49)
        np.testing.assert_allclose(window, np.broadcast_to(
            offsets[end - HISTORY + 1:end + 1, None, None], window.shape), atol=1e-4)
    # The training file read as new data gives the training inputs, bit for bit.
    again = [window for window, _ in read_field_inputs(
        scenarios.sample_file("E1_north_america.nc"), run).samples]
    for window, _ in run.data.samples["test"]:
        assert any(np.array_equal(window, other) for other in again)


def test_another_grid_a_missing_variable_or_a_short_series_is_refused_by_name(e1_run,
                                                                              tmp_path):
    from adaptlab.run_loading import load_run

    run = load_run(e1_run, device="cpu", with_data=False)
    grid = run.data.coords
    values = np.full((5, 37, 49), 280.0)
    coarse = _fields_file(tmp_path / "coarse.nc", values[:, ::2], grid["lat"][::2], grid["lon"])
    with pytest.raises(AdaptlabError) as error:
        run.predict(coarse, out=tmp_path / "coarse.csv")
    assert str(error.value) == (f"{coarse}: another grid than run {e1_run} was trained on (lat "
                                "19 points 15..60 here, lat 37 points 15..60 in the run); "
                                "regrid it to the run's grid")
    shifted = _fields_file(tmp_path / "shifted.nc", values, grid["lat"],
                           [lon + 1.0 for lon in grid["lon"]])
    with pytest.raises(AdaptlabError, match=r"shifted\.nc: another grid .*\(lon 49 points "
                                            r"226\.\.316 here, lon 49 points 225\.\.315 in"):
        run.predict(shifted, out=tmp_path / "shifted.csv")
    renamed = _fields_file(tmp_path / "tas.nc", values, grid["lat"], grid["lon"], variable="tas")
    with pytest.raises(AdaptlabError, match=r"tas\.nc: no variable 'air_temperature' \(the run "
                                            r"was trained on it\); variables: \['tas'\]"):
        run.predict(renamed, out=tmp_path / "tas.csv")
    short = _fields_file(tmp_path / "short.nc", values[:2], grid["lat"], grid["lon"])
    with pytest.raises(AdaptlabError, match=r"short\.nc: variable 'air_temperature' has 2 time "
                                            "steps; the run reads windows of 3"):
        run.predict(short, out=tmp_path / "short.csv")
    assert not list(tmp_path.glob("*.csv")) and not list(tmp_path.glob("**/.*partial"))


def _event_fields(days: int, labels: bool, seed: int) -> xr.Dataset:
    """Fields on a 12 x 24 grid with a warm blob planted on event days."""
    rng = np.random.default_rng(seed)
    events = (rng.random(days) < 0.4).astype(np.int64)
    y, x = np.mgrid[0:12, 0:24]
    fields = rng.normal(5500, 20, (days, 12, 24)) + events[:, None, None] * 60 * np.exp(
        -((y - 6) ** 2 + (x - 12) ** 2) / 8)
    data = xr.Dataset({"z500": (("time", "lat", "lon"), fields.astype("float32"))},
                      coords={"time": pd.date_range("2001-01-01", periods=days).values,
                              "lat": np.linspace(30, 70, 12), "lon": np.arange(24) * 15.0})
    return data.assign(label=("time", events)) if labels else data


def test_event_classification_predicts_one_row_per_time_step_of_an_unlabelled_file(tmp_path):
    from adaptlab.config import RunConfig
    from adaptlab.run import run
    from adaptlab.run_loading import load_run

    _event_fields(120, labels=True, seed=0).to_netcdf(tmp_path / "events.nc", engine="h5netcdf")
    run(RunConfig(domain="weather", data=str(tmp_path / "events.nc"), device="cpu", epochs=1,
                  batch_size=16, out=str(tmp_path / "run")), progress=False)
    unlabelled = _event_fields(9, labels=False, seed=1)
    unlabelled.to_netcdf(tmp_path / "new.nc", engine="h5netcdf")
    result = load_run(tmp_path / "run", device="cpu", with_data=False).predict(
        tmp_path / "new.nc", out=tmp_path / "new.csv")
    table = result.table
    stamps = [str(t)[:19] for t in unlabelled["time"].values[HISTORY - 1:]]
    assert table["path"].tolist() == [f"{tmp_path / 'new.nc'}:{stamp}" for stamp in stamps]
    probabilities = table[["probability_no event", "probability_event"]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert set(table["prediction"]) <= {"no event", "event"}


def test_the_field_run_exports_to_onnx_with_the_runs_fields(e1_run, tmp_path):
    """Anomaly fields of a few kelvin (not large: float32 keeps them to about 1e-6), so the
    bound stays absolute."""
    from export_checks import TOLERANCE, export_and_compare, held_out

    reference = held_out(e1_run)
    assert reference[0][1][0].shape[1:] == (1, 37, 49)
    check = export_and_compare(e1_run, tmp_path / "export", "onnx", reference)
    assert check.graph_inputs == ["fields"]
    assert check.differences["folder"] < TOLERANCE and check.differences["onnx"] < TOLERANCE
