"""Fixed land/sea masks in users' gridded fields: cells NaN at every time step are a mask
(an input channel, out of the loss, the metrics and the attributions, NaN in predictions);
a NaN that comes and goes is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from adaptlab.cli import main
from adaptlab.errors import AdaptlabError

LAT, LON, STEPS = 8, 12, 60
LAND = (slice(2, 5), slice(3, 7))  # 3 x 4 = 12 cells NaN at every time step
LAND_CELLS = 12


def _sst(steps: int = STEPS, seed: int = 0) -> np.ndarray:
    """A persistent, learnable field: each step 0.9 of the last plus noise (K)."""
    rng = np.random.default_rng(seed)
    values = np.empty((steps + 1, LAT, LON))
    values[0] = rng.normal(0, 1, (LAT, LON))
    for t in range(steps):
        values[t + 1] = 0.9 * values[t] + rng.normal(0, 0.3, (LAT, LON))
    return values + 290.0


def _write(path: Path, values: np.ndarray, label: bool = True, land=LAND) -> Path:
    values = values.copy()
    values[(slice(None), *land)] = np.nan
    fields = {"sst": (("time", "lat", "lon"), values[:-1].astype("float32"), {"units": "K"})}
    if label:  # the field to predict at each step: the next step's
        fields["label"] = (("time", "lat", "lon"), values[1:].astype("float32"))
    xr.Dataset(fields, coords={"time": pd.date_range("2000-01-01", periods=len(values) - 1,
                                                     freq="D").values,
                               "lat": np.linspace(-35, 35, LAT),
                               "lon": np.arange(LON) * 30.0}).to_netcdf(path, engine="h5netcdf")
    return path


def _land() -> np.ndarray:
    land = np.zeros((LAT, LON), bool)
    land[LAND] = True
    return land


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mask")
    data = _write(folder / "sst.nc", _sst())
    out = folder / "run"
    assert main(["run", "weather", "--data", str(data), "--out", str(out), "--device", "cpu",
                 "--epochs", "2", "--backbone", "field_unet", "--set", "batch_size=8",
                 "--quiet"]) == 0
    return out


def test_a_fixed_mask_is_an_input_channel_and_no_nan_reaches_the_model(tmp_path):
    from adaptlab_weather.readers import read_event_fields

    data = read_event_fields(_write(tmp_path / "sst.nc", _sst()))
    window, target = data.samples["train"][0]
    assert window.shape == (4, LAT, LON) and target.shape == (1, LAT, LON)
    assert np.array_equal(window[0], (~_land()).astype(np.float32))  # channel 0: 1 = data
    assert np.isfinite(window).all() and np.isfinite(target).all()
    assert (window[1:, _land()] == 0).all() and (target[:, _land()] == 0).all()
    assert data.task == "field-regression" and data.task_options["in_channels"] == 4


@pytest.mark.slow  # trains a run (module fixture, about 25 s)
def test_metrics_are_computed_over_the_sea_cells_only(masked_run, tmp_path):
    from adaptlab.run_loading import load_run

    metrics = json.loads((masked_run / "metrics.json").read_text())
    test = metrics["final"]["test"]
    assert np.isfinite([test["rmse"], test["mae"], test["loss"]]).all()
    run = load_run(masked_run, device="cpu")
    run.predict(split="test", out=tmp_path / "test.csv")
    fields = xr.open_dataset(tmp_path / "test.nc", engine="h5netcdf")
    predicted = fields["sst_anomaly"].values.astype(np.float64)
    truth = fields["sst_anomaly_target"].values.astype(np.float64)
    sea = ~_land()
    weights = np.cos(np.deg2rad(fields["lat"].values))[:, None]
    weights = np.broadcast_to(weights / weights.mean(), sea.shape)[sea]
    error = (predicted - truth)[:, sea]
    scale = run.data.preprocessing["scale"]  # the file is in K, the metrics in training units
    rmse = np.sqrt((weights * error ** 2).sum(1) / weights.sum()).mean()
    assert np.sqrt(((weights * error ** 2).sum(1) / weights.sum()).mean()) / scale == \
        pytest.approx(test["rmse"], rel=1e-4)
    assert ((weights * np.abs(error)).sum(1) / weights.sum()).mean() / scale == \
        pytest.approx(test["mae"], rel=1e-4)
    assert np.isfinite(rmse)


@pytest.mark.slow  # trains a run (module fixture, about 25 s)
def test_metrics_and_the_data_description_name_the_mask(masked_run):
    metrics = json.loads((masked_run / "metrics.json").read_text())
    assert any(note.startswith(f"mask: {LAND_CELLS} of {LAT * LON} grid cells")
               and "'sst'" in note for note in metrics["data_notes"])
    record = json.loads((masked_run / "data.json").read_text())["preprocessing"]["mask"]
    assert record["cells"] == LAND_CELLS and record["variable"] == "sst"
    assert record["fraction"] == pytest.approx(LAND_CELLS / (LAT * LON), abs=1e-6)


def test_a_nan_that_comes_and_goes_is_refused_by_name(tmp_path):
    from adaptlab_weather.readers import read_event_fields

    values = _sst()
    values[7, 1, 9] = np.nan  # one missing value at a sea cell: a gap, not a mask
    path = _write(tmp_path / "gappy.nc", values)
    with pytest.raises(AdaptlabError, match=r"gappy\.nc: variable 'sst' is NaN or infinite at "
                                            r"time=7, lat=1, lon=9 \(1 values\) and not at "
                                            "every time step"):
        read_event_fields(path)


@pytest.mark.slow  # trains a run (module fixture, about 25 s)
def test_predictions_are_nan_at_the_mask_and_another_mask_is_refused(masked_run, tmp_path):
    from adaptlab.run_loading import load_run

    new = _write(tmp_path / "new.nc", _sst(10, seed=5), label=False)
    out = tmp_path / "out" / "new.csv"
    assert main(["predict", str(masked_run), "--data", str(new), "--out", str(out), "--quiet",
                 "--device", "cpu"]) == 0
    values = xr.open_dataset(out.with_suffix(".nc"), engine="h5netcdf")["sst_anomaly"].values
    assert np.array_equal(np.isnan(values[2:]).all(axis=0), _land())
    assert np.isfinite(values[2:, ~_land()]).all()
    other = _write(tmp_path / "other.nc", _sst(10, seed=5), label=False,
                   land=(slice(2, 5), slice(3, 8)))  # three cells more
    run = load_run(masked_run, device="cpu", with_data=False)
    with pytest.raises(AdaptlabError, match=r"other\.nc: variable 'sst' has another mask than "
                                            r"run .* was trained with: 3 cells differ"):
        run.predict(other, out=tmp_path / "other.csv")


@pytest.mark.slow  # trains a run (module fixture, about 25 s)
def test_attributions_are_zero_at_the_masked_cells(masked_run):
    from adaptlab.explain.api import explain

    land = torch.from_numpy(_land())
    # Saliency: a gradient is not zero where the input equals the baseline, as IG's is.
    for method in ("integrated_gradients", "saliency"):
        explanation = explain(masked_run, method, samples=2, checks=False, compare=False,
                              report=False)
        for features in explanation.result.features:
            assert features.shape == land.shape
            assert (features[land] == 0).all() and features[~land].abs().sum() > 0, method
        assert any(f"{LAND_CELLS} of {LAT * LON} grid cells carry no data" in note
                   for note in explanation.result.notes)
