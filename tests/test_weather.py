"""The weather plugin: its simulator, its blocking demo, field inputs, and the seed's claim
at small scale: pre-training on the simulator beats training on the scarce target alone."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from adaptlab.cli import main
from adaptlab.data.fields import check_field
from adaptlab.errors import AdaptlabError
from adaptlab_weather.datasets import SOURCE, TARGET, blocking_observed, blocking_simulated
from adaptlab_weather.simulator import simulate


def test_the_simulator_is_deterministic_for_a_seed():
    fields, labels = simulate(120, SOURCE, seed=5)
    again, again_labels = simulate(120, SOURCE, seed=5)
    other, _ = simulate(120, SOURCE, seed=6)
    assert fields.shape == (120, SOURCE.lat, SOURCE.lon) and fields.dtype == np.float32
    assert np.array_equal(fields, again) and np.array_equal(labels, again_labels)
    assert not np.allclose(fields, other)
    # Blocks happen, and the persistence label marks some days but not most.
    assert 0.05 < labels.mean() < 0.6


def test_source_and_target_flows_differ_and_every_split_holds_both_classes():
    source, target = blocking_simulated({}), blocking_observed({})
    for data in (source, target):
        assert data.modality == "field"
        for split in ("train", "val", "test"):
            assert set(data.labels(split)) == {0, 1}, split
        assert data.samples["train"][0][0].shape == (3, SOURCE.lat, SOURCE.lon)
    assert len(source.samples["train"]) > 2 * len(target.samples["train"])
    assert TARGET != SOURCE
    # The shift is real: the target's fields are smoother (neighbour correlation higher).
    def smoothness(data):
        fields = np.stack([item[0][-1] for item in data.samples["train"][:200]])
        return np.corrcoef(fields[..., :-1].ravel(), fields[..., 1:].ravel())[0, 1]
    assert smoothness(target) > smoothness(source) + 0.05


def test_field_inputs_with_nan_or_a_wrong_shape_are_named():
    field = np.zeros((3, 4, 8), dtype=np.float32)
    field[1, 2, 5] = np.nan
    with pytest.raises(AdaptlabError, match=r"day 7: NaN or infinite value at .* \[1, 2, 5\]"):
        check_field(field, "day 7")
    with pytest.raises(AdaptlabError, match="shape"):
        check_field(np.zeros((2, 3, 4, 5)), "x.nc")


@pytest.mark.slow
def test_transfer_from_the_simulator_beats_the_target_alone_at_the_smallest_fraction(
        tmp_path, capsys):
    out = tmp_path / "curve"
    assert main(["transfer", "weather", "--out", str(out), "--cache", str(tmp_path / "cache"),
                 "--fractions", "0.05", "--seeds", "0,1,2", "--device", "cpu", "--quiet"]) == 0
    result = json.loads((out / "learning_curve.json").read_text())
    row = result["summary"][0]
    print(capsys.readouterr().out)
    assert row["samples"] == 30 and row["transfer"]["seeds"] == row["control"]["seeds"] == 3
    assert row["transfer"]["mean"] > row["control"]["mean"], row
    # Always answering "no block" scores a macro-F1 of 0.46 on this test split.
    assert row["transfer"]["mean"] > 0.5


def _event_dataset(days: int = 400, seed: int = 0, lat_name: str = "lat"):
    """Fields whose label is planted: a warm blob in the last day of a window when 1."""
    import xarray as xr

    rng = np.random.default_rng(seed)
    labels = (rng.random(days) < 0.4).astype(np.int64)
    fields = rng.normal(5500, 20, (days, 12, 24))
    y, x = np.mgrid[0:12, 0:24]
    blob = 60 * np.exp(-((y - 6) ** 2 + (x - 12) ** 2) / 8)
    fields[labels == 1] += blob
    return xr.Dataset({"z500": (("time", lat_name, "lon"), fields.astype("float32")),
                       "label": (("time",), labels)},
                      coords={"time": np.arange(days), lat_name: np.linspace(30, 70, 12),
                              "lon": np.arange(24) * 15.0})


@pytest.mark.slow
def test_netcdf_and_zarr_fields_with_labels_are_read_and_learned(tmp_path, capsys):
    from adaptlab_weather.readers import read_event_fields

    dataset = _event_dataset()
    dataset.to_netcdf(tmp_path / "events.nc", engine="h5netcdf")
    dataset.to_zarr(tmp_path / "events.zarr")
    from_netcdf, from_zarr = (read_event_fields(tmp_path / name)
                              for name in ("events.nc", "events.zarr"))
    assert from_netcdf.counts() == from_zarr.counts()
    assert np.array_equal(from_netcdf.samples["test"][0][0], from_zarr.samples["test"][0][0])
    assert from_netcdf.samples["train"][0][0].shape == (3, 12, 24)
    code = main(["run", "weather", "--data", str(tmp_path / "events.nc"), "--out",
                 str(tmp_path / "run"), "--device", "cpu", "--epochs", "4", "--quiet"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["final"]["test"]["accuracy"] > 0.8  # the planted blob is found


def test_bad_field_files_are_named(tmp_path):
    from adaptlab_weather.readers import read_event_fields

    good = _event_dataset(40)
    cases = {
        "nolabel.nc": (good.drop_vars("label"), "no variable 'label'"),
        "twofields.nc": (good.assign(t850=good["z500"] * 0), "exactly one (time, lat, lon)"),
        "nolat.nc": (_event_dataset(40, lat_name="y"), "no latitude dimension"),
    }
    nan = good.copy(deep=True)
    nan["z500"][3, 2, 5] = np.nan
    cases["nan.nc"] = (nan, "NaN or infinite at time=3, lat=2, lon=5")
    for name, (dataset, message) in cases.items():
        dataset.to_netcdf(tmp_path / name, engine="h5netcdf")
        with pytest.raises(AdaptlabError, match=re.escape(message)):
            read_event_fields(tmp_path / name)
        with pytest.raises(AdaptlabError, match=name.replace(".", r"\.")):
            read_event_fields(tmp_path / name)
    (tmp_path / "fields.csv").write_text("a,b\n")
    with pytest.raises(AdaptlabError, match="not a NetCDF file"):
        read_event_fields(tmp_path / "fields.csv")
    (tmp_path / "broken.nc").write_bytes(b"not netcdf at all")
    with pytest.raises(AdaptlabError, match="broken.nc: cannot read as NetCDF"):
        read_event_fields(tmp_path / "broken.nc")


@pytest.mark.slow
def test_efficientnet_reads_fields_rendered_as_images():
    from adaptlab.backbones.offline import efficientnet_lite0
    from adaptlab.data.torch_datasets import make_torch_dataset

    data = blocking_observed({})
    backbone = efficientnet_lite0()
    dataset = make_torch_dataset(data, "test", backbone, False, {"image_size": 64})
    image, label = dataset[0]
    field = data.samples["test"][0][0]
    assert image.shape == (3, 64, 64) and label in (0, 1)
    # Brightness follows the anomaly: the warmest cell of the last day is the reddest... of
    # the blue channel (day 3 is blue); grey (0 after normalisation) is no anomaly.
    hottest = np.unravel_index(np.argmax(field[-1]), field[-1].shape)
    coldest = np.unravel_index(np.argmin(field[-1]), field[-1].shape)
    scale = 64 / np.array(field[-1].shape)
    at = [tuple(int(v) for v in (np.array(p) + 0.5) * scale) for p in (hottest, coldest)]
    assert image[2][at[0]] > 0 > image[2][at[1]]
    # The pre-trained features already separate the classes a little: nearest class mean
    # (the run's unadapted baseline) on 200 training and 100 test windows.
    from adaptlab.tasks.classification import nearest_class_mean_baseline

    loaders = {split: torch.utils.data.DataLoader(
        torch.utils.data.Subset(make_torch_dataset(data, split, backbone, False,
                                                   {"image_size": 64}), range(count)),
        batch_size=50) for split, count in (("train", 200), ("test", 100))}
    result = nearest_class_mean_baseline(backbone.module, loaders, data.class_names, "cpu")
    assert result["test"]["samples"] == 100 and result["test"]["auc"] is not None
