"""The climate-scenario demo (A1B -> E1): field-to-field regression with latitude weighting,
its reader's errors, grid checks between source and target, and transfer against the
target-only control."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from adaptlab.cli import main
from adaptlab.errors import AdaptlabError
from adaptlab_weather import scenarios  # part of the install: broken fails, never skips


def test_the_demo_scenarios_share_a_grid_and_diverge_after_2000():
    source, target = scenarios.scenario_a1b({}), scenarios.scenario_e1({})
    assert source.coords == target.coords
    assert len(source.coords["lat"]) == 37 and len(source.coords["lon"]) == 49
    assert source.task == target.task == "field-regression"
    x, y = target.samples["train"][0]
    assert x.shape == (3, 37, 49) and y.shape == (1, 37, 49)
    # The last input year is channel 2, the target the year after it.
    assert target.task_options == {"residual_channel": 2}
    late = [np.mean(y) for _, y in target.samples["test"]]
    late_source = [np.mean(y) for _, y in source.samples["test"]]
    assert np.mean(late_source) > np.mean(late) + 1.0  # A1B warms faster


def test_area_weighted_metrics_and_a_residual_model_start_at_persistence():
    from adaptlab.backbones.field_unet import field_unet
    from adaptlab.tasks.field_regression import FieldRegressionTask, latitude_weights

    coords = {"lat": [0.0, 60.0], "lon": [0.0, 10.0, 20.0]}
    weights = latitude_weights(coords, 2)
    assert weights.squeeze().tolist() == pytest.approx([4 / 3, 2 / 3])
    task = FieldRegressionTask(["t"], (1, 2, 3), coords, residual_channel=2)
    truth = torch.zeros(1, 1, 2, 3)
    equator_error = truth.clone()
    equator_error[..., 0, :] = 1.0
    polar_error = truth.clone()
    polar_error[..., 1, :] = 1.0
    # An error at 60N weighs half one at the equator.
    assert task._metrics(polar_error, truth)["rmse"] ** 2 == pytest.approx(
        0.5 * task._metrics(equator_error, truth)["rmse"] ** 2)
    pattern = torch.randn(4, 1, 2, 3)
    assert task._metrics(2 * pattern + 5, pattern)["acc"] == pytest.approx(1.0)
    backbone = field_unet({"in_channels": 3, "grid": coords})
    model, _ = task.build_model(backbone, None)
    x = torch.randn(4, 3, 2, 3)
    torch.testing.assert_close(model(x), x[:, 2:3])


def _scenario_file(path, drop=None, nan=False, lat_name="lat"):
    import xarray as xr

    values = np.random.default_rng(0).normal(280, 1, (12, 4, 5)).astype("float32")
    if nan:
        values[7, 2, 3] = np.nan
    data = xr.Dataset({"air_temperature": (("time", lat_name, "lon"), values)},
                      coords={"time": np.arange(2000, 2012).astype(str).astype("datetime64[Y]")
                              .astype("datetime64[ns]"), lat_name: [20.0, 30.0, 40.0, 50.0],
                              "lon": [250.0, 260.0, 270.0, 280.0, 290.0]})
    if drop:
        data = data.rename({"air_temperature": drop})
    data.to_netcdf(path, engine="h5netcdf")
    return path


def test_scenario_files_with_a_missing_variable_latitude_or_a_nan_are_named(tmp_path):
    path = _scenario_file(tmp_path / "renamed.nc", drop="tas")
    with pytest.raises(AdaptlabError, match=r"renamed\.nc: no variable 'air_temperature'; "
                                            r"variables: \['tas'\]"):
        scenarios.read_scenario(path)
    path = _scenario_file(tmp_path / "rows.nc", lat_name="row")
    with pytest.raises(AdaptlabError, match=r"rows\.nc: variable 'air_temperature' has no "
                                            "latitude dimension"):
        scenarios.read_scenario(path)
    path = _scenario_file(tmp_path / "gap.nc", nan=True)
    with pytest.raises(AdaptlabError, match=r"gap\.nc: variable 'air_temperature' is NaN at "
                                            "time index 7, lat 40, lon 280"):
        scenarios.read_scenario(path)
    years, fields, coords = scenarios.read_scenario(_scenario_file(tmp_path / "ok.nc"))
    assert fields.shape == (12, 4, 5) and coords["lat"] == [20.0, 30.0, 40.0, 50.0]
    assert years.tolist() == list(range(2000, 2012))


@pytest.mark.slow
def test_a_source_run_on_another_grid_is_refused_naming_both(tmp_path, capsys):
    source = tmp_path / "a1b"
    assert main(["run", "weather", "--dataset", "scenario-a1b", "--set", "epochs=1",
                 "--set", "train_samples=8", "--out", str(source), "--device", "cpu",
                 "--quiet"]) == 0
    assert json.loads((source / "metrics.json").read_text())["grid"]["lat"][0] == 15.0
    target = tmp_path / "blocking"
    assert main(["run", "weather", "--set", f"init_from={source}", "--out", str(target),
                 "--device", "cpu", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "trained on another grid (lat 37 points 15..60, lon 49 points 225..315) than " \
           "this data (no recorded grid)" in error
    assert not target.exists() or not any(target.iterdir())


@pytest.mark.slow
def test_transfer_from_a1b_beats_e1_alone_at_the_smallest_fraction(tmp_path, capsys):
    out = tmp_path / "curve"
    assert main(["transfer", "weather", "--dataset", "scenario-e1", "--out", str(out),
                 "--cache", str(tmp_path / "cache"), "--fractions", "0.05", "--seeds", "0,1,2",
                 "--set", "epochs=8", "--source-set", "epochs=6",  # the demo's are 15 and 10
                 "--device", "cpu", "--quiet"]) == 0
    result = json.loads((out / "learning_curve.json").read_text())
    row = result["summary"][0]
    assert result["monitor"] == "rmse" and result["higher_is_better"] is False
    assert row["transfer"]["seeds"] == row["control"]["seeds"] == 3
    assert row["transfer"]["mean"] < row["control"]["mean"]
    # Explained, a transfer run is compared with its source model: the seed's before/after
    # transfer maps, on the latitude-longitude grid.
    transfer_run = next(p["run_dir"] for p in result["points"] if p["arm"] == "transfer")
    assert main(["explain", transfer_run, "--samples", "2", "--no-checks"]) == 0
    report = json.loads((Path(transfer_run) / "report" / "attributions.json").read_text())
    assert "before transfer" in report["comparison"]["what"]
    # A reference from outside the comparison: the control seed (E1 alone, never near the
    # source) explained on the same samples. The transfer's maps must keep the source's
    # ranking far better than that unrelated model's do, and still have changed.
    control_run = next(p["run_dir"] for p in result["points"] if p["arm"] == "control")
    assert main(["explain", control_run, "--samples", "2", "--no-checks", "--no-compare"]) == 0
    control = json.loads((Path(control_run) / "report" / "attributions.json").read_text())
    assert [s["index"] for s in control["samples"]] == [s["index"] for s in report["samples"]]
    kept = [_rank(s["unadapted_attribution"], s["attribution"]) for s in report["samples"]]
    unrelated = [_rank(s["unadapted_attribution"], c["attribution"])
                 for s, c in zip(report["samples"], control["samples"], strict=True)]
    assert min(kept) > max(unrelated) + 0.3
    assert max(unrelated) + 0.3 < report["comparison"]["mean_rank_correlation"] < 0.999


def _rank(a: dict, b: dict) -> float:
    return float(spearmanr(a["values"], b["values"]).statistic)


@pytest.mark.slow
def test_lora_adapts_the_field_networks_and_reloads_exactly(tmp_path, capsys):
    out = tmp_path / "lora"
    assert main(["run", "weather", "--dataset", "scenario-a1b", "--strategy", "lora",
                 "--set", "epochs=1", "--set", "train_samples=8", "--out", str(out),
                 "--device", "cpu", "--quiet"]) == 0
    costs = json.loads((out / "costs.json").read_text())
    assert 0 < costs["trainable_params"] < 0.3 * costs["total_params"]
    assert costs["reload_max_abs_diff"] <= 1e-5
