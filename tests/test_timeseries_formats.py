"""Time-series data as users keep it: UCR/UEA case files (.ts, .arff, .npz) for series
classification, series sampled faster than hourly or on a plain step index, and a folder in
which one series is too short for the horizon. Every file is written here, with its signal
planted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from adaptlab.errors import AdaptlabError

LENGTH = 64
FREQUENCIES = {"slow": 2, "fast": 7}  # cycles per case: the planted class signal


def _case(label: str, seed: int, channels: int = 1, length: int = LENGTH) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length) / length
    rows = [np.sin(2 * np.pi * FREQUENCIES[label] * t + c) * (10 ** c)
            + 0.05 * rng.standard_normal(length) for c in range(channels)]
    return np.array(rows)


def _write_ts(path, cases: list[tuple[np.ndarray, str]], univariate: bool = True,
              equal: bool = True, extra: str = "", labelled: bool = True) -> None:
    lines = ["# written by the test", f"@problemName {path.stem}", "@timeStamps false",
             "@missing true", f"@univariate {'true' if univariate else 'false'}",
             f"@equalLength {'true' if equal else 'false'}",
             "@classLabel true slow fast" if labelled else "@classLabel false",
             "@data"]
    for values, label in cases:
        channels = [",".join("?" if np.isnan(v) else f"{v:.5f}" for v in row) for row in values]
        lines.append(":".join(channels) + (f":{label}" if labelled else ""))
    path.write_text("\n".join(lines) + extra + "\n")


def _cases(per_class: int, seed: int, channels: int = 1) -> list[tuple[np.ndarray, str]]:
    return [(_case(label, seed + 100 * k + i, channels), label)
            for i in range(per_class) for k, label in enumerate(FREQUENCIES)]


def test_ts_train_and_test_files_read_with_exact_shapes_labels_and_splits(tmp_path):
    from adaptlab_timeseries.datasets import read_series_data

    train, test = _cases(10, seed=0), _cases(4, seed=1000)
    test[0][0][0, 20] = np.nan  # one missing value: filled by the gap rule
    _write_ts(tmp_path / "Waves_TRAIN.ts", train)
    _write_ts(tmp_path / "Waves_TEST.ts", test)
    for given in (tmp_path / "Waves_TRAIN.ts", tmp_path):  # the file finds its partner
        data = read_series_data(str(given))
        assert data.task == "classification" and data.modality == "series-labelled"
        assert data.class_names == ["slow", "fast"]
        assert data.counts() == {"train": 16, "val": 4, "test": 8}
        assert data.preprocessing == {"min_steps": LENGTH, "channels": 1}
        first, label = data.samples["test"][0]
        assert label == 0 and len(first.series) == LENGTH and first.horizon == 0
        np.testing.assert_allclose(first.series.values[:5], np.round(test[0][0][0, :5], 5),
                                   atol=1e-5)
        assert first.series.values[20] == pytest.approx(
            (test[0][0][0, 19] + test[0][0][0, 21]) / 2, abs=1e-4)
        assert any("1 missing value(s) filled" in note for note in data.notes)
        labels = [label for _, label in data.samples["test"]]
        assert labels == [0, 1] * 4  # the file's order and its declared class order


def test_ts_multivariate_unequal_length_joins_channels_scaled(tmp_path):
    from adaptlab_timeseries.cases import cases_to_series, read_cases

    cases = [(_case("slow", 1, channels=3, length=50), "slow"),
             (_case("fast", 2, channels=3, length=40), "fast")]
    _write_ts(tmp_path / "motion.ts", cases, univariate=False, equal=False)
    read = read_cases(tmp_path / "motion.ts")
    assert [v.shape for v in read.values] == [(3, 50), (3, 40)] and read.labels == ["slow", "fast"]
    series = cases_to_series(read)
    assert [len(item) for item, _ in series] == [150, 120]
    # channel 3 is 100 times channel 1's amplitude: each is scaled to [0, 1] before joining
    joined = series[0][0].values
    for part in np.split(joined, 3):
        assert part.min() == pytest.approx(0, abs=1e-6) and part.max() == pytest.approx(1)


@pytest.mark.parametrize("text, message", [
    ("1,2,3:slow\n1,2,x:fast", r"bad.ts: line 10: channel 1 value 3 holds 'x', not a number"),
    ("1,2,3:medium", r"bad.ts: line 9: class label 'medium' is not among @classLabel slow fast"),
    ("1,2,3:4,5,6:slow", r"bad.ts: line 9: 2 channel\(s\) separated by ':', the file's cases "
                         r"have 1"),
    ("1,2,3:slow\n1,2:fast", r"bad.ts: line 10: 2 values per channel, the first case has 3"),
])
def test_malformed_ts_names_file_line_and_field(tmp_path, text, message):
    from adaptlab_timeseries.cases import read_ts

    _write_ts(tmp_path / "bad.ts", [])
    path = tmp_path / "bad.ts"
    path.write_text(path.read_text().rstrip("\n") + "\n" + text + "\n")
    with pytest.raises(AdaptlabError, match=message):
        read_ts(path)


def test_ts_long_gap_case_is_skipped_and_listed(tmp_path):
    from adaptlab_timeseries.datasets import read_series_data

    cases = _cases(6, seed=0)
    cases[3][0][0, 10:30] = np.nan
    _write_ts(tmp_path / "gappy.ts", cases)
    data = read_series_data(str(tmp_path / "gappy.ts"))
    assert sum(data.counts().values()) == 11
    assert data.skipped[0]["file"].endswith("gappy.ts [case 4]")
    assert "line 12 channel 1: 20 missing values in a row" in data.skipped[0]["reason"]


def _write_arff(path, cases, channels: int = 1) -> None:
    if channels == 1:
        head = [f"@attribute att{k} numeric" for k in range(LENGTH)]
        rows = [",".join("?" if np.isnan(v) else f"{v:.5f}" for v in values[0]) + f",{label}"
                for values, label in cases]
    else:
        head = ["@attribute motion relational"] + [f" @attribute t{k} numeric"
                                                   for k in range(LENGTH)] + ["@end motion"]
        rows = ["'" + "\\n".join(",".join(f"{v:.5f}" for v in row) for row in values)
                + f"',{label}" for values, label in cases]
    path.write_text("\n".join([f"@relation {path.stem}", "", *head,
                               "@attribute target {slow,fast}", "", "@data", *rows]) + "\n")


def test_arff_univariate_and_relational_multivariate(tmp_path):
    from adaptlab_timeseries.cases import read_arff
    from adaptlab_timeseries.datasets import read_series_data

    cases = _cases(6, seed=0)
    _write_arff(tmp_path / "Waves_TRAIN.arff", cases)
    _write_arff(tmp_path / "Waves_TEST.arff", _cases(2, seed=50))
    data = read_series_data(str(tmp_path / "Waves_TRAIN.arff"))
    assert data.class_names == ["slow", "fast"] and data.counts()["test"] == 4
    assert sum(data.counts().values()) == 16
    multi = _cases(3, seed=0, channels=2)
    _write_arff(tmp_path / "multi.arff", multi, channels=2)
    read = read_arff(tmp_path / "multi.arff")
    assert [v.shape for v in read.values] == [(2, LENGTH)] * 6
    np.testing.assert_allclose(read.values[1], np.round(multi[1][0], 5), atol=1e-5)
    assert read.labels == ["slow", "fast"] * 3 and read.where[0] == f"line {LENGTH + 8}"
    bad = (tmp_path / "Waves_TEST.arff").read_text().replace(",fast\n", ",oops,fast\n", 1)
    (tmp_path / "bad.arff").write_text(bad.replace(f"{cases[0][0][0, 0]:.5f}", "zz", 1))
    with pytest.raises(AdaptlabError, match=r"bad.arff: line \d+: field \d+ holds"):
        read_arff(tmp_path / "bad.arff")


def test_npz_cases_and_a_planted_pickle_is_refused(tmp_path):
    from adaptlab_timeseries.datasets import read_series_data

    cases = _cases(8, seed=0, channels=2)
    x = np.stack([values for values, _ in cases])
    y = np.array([label for _, label in cases])
    np.savez(tmp_path / "motion.npz", X=x, y=y)
    data = read_series_data(str(tmp_path / "motion.npz"))
    assert data.class_names == ["fast", "slow"]  # sorted: an npz declares no order
    assert sum(data.counts().values()) == 16 and data.preprocessing["channels"] == 2
    assert all(len(w.series) == 2 * LENGTH for split in data.samples.values() for w, _ in split)
    np.savez(tmp_path / "split.npz", X_train=x, y_train=y, X_test=x[:4], y_test=y[:4])
    assert read_series_data(str(tmp_path / "split.npz")).counts()["test"] == 4

    class Planted:
        def __reduce__(self):
            return (open, (str(tmp_path / "EXECUTED"), "w"))

    np.savez(tmp_path / "planted.npz", X=x, y=np.array([Planted()] * len(x), dtype=object))
    with pytest.raises(AdaptlabError, match=r"planted.npz: holds Python objects \(a pickle\)"):
        read_series_data(str(tmp_path / "planted.npz"))
    assert not (tmp_path / "EXECUTED").exists()
    np.savez(tmp_path / "flat.npz", X=x[:, 0, :5].astype(str), y=y)
    with pytest.raises(AdaptlabError, match=r"flat.npz: array 'X' must be numbers"):
        read_series_data(str(tmp_path / "flat.npz"))


@pytest.mark.slow
def test_ts_cases_train_a_classifier_briefly_and_classify_a_new_file(tmp_path):
    """Head-only on Fracast features, one epoch: the run reads the .ts pair end to end, and
    its model classifies an unlabelled .ts file case by case."""
    from adaptlab.config import RunConfig
    from adaptlab.run import run
    from adaptlab.run_loading import load_run

    _write_ts(tmp_path / "Waves_TRAIN.ts", _cases(6, seed=0))
    _write_ts(tmp_path / "Waves_TEST.ts", _cases(3, seed=500))
    result = run(RunConfig(domain="timeseries", data=str(tmp_path / "Waves_TRAIN.ts"),
                           backbone="fracast-features", strategy="head", device="cpu", epochs=1,
                           batch_size=8, out=str(tmp_path / "run")), progress=False)
    assert result.metrics["task"] == "classification"
    assert result.metrics["split_sizes"]["test"] == 6
    _write_ts(tmp_path / "new.ts", _cases(2, seed=900), labelled=False)
    table = load_run(tmp_path / "run", device="cpu").predict(tmp_path / "new.ts",
                                                              out=tmp_path / "p.csv").table
    assert len(table) == 4 and str(table.iloc[0, 0]).endswith("new.ts:case 1")


def _sensor_csv(path, n: int, hz: int = 100, column: str = "timestamp"):
    t = np.arange(n)
    values = np.sin(2 * np.pi * t / 25) + 0.01 * np.random.default_rng(0).standard_normal(n)
    if column == "timestamp":
        stamps = pd.Timestamp("2024-05-01 12:00") + pd.to_timedelta(t * (1000 // hz), unit="ms")
        times = [s.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] for s in stamps]
    else:
        times = [f"{k / hz:.2f}" for k in t]
    pd.DataFrame({column: times, "accel": values}).to_csv(path, index=False)


def test_100_hz_and_step_index_series_read_with_a_stated_season(tmp_path):
    from adaptlab_timeseries.datasets import read_series_data
    from adaptlab_timeseries.readers import ReadLog, read_series

    _sensor_csv(tmp_path / "imu.csv", 400)
    rows = pd.read_csv(tmp_path / "imu.csv")
    rows.drop(index=[50]).to_csv(tmp_path / "imu.csv", index=False)  # one sample lost
    log = ReadLog()
    series = read_series(tmp_path / "imu.csv", log=log)
    assert len(series[0]) == 400 and series[0].season == 1
    assert series[0].times[50] == "2024-05-01T12:00:00.500000"
    assert "10-millisecond spacing" in log.season_notes()[0]
    from adaptlab_timeseries.predict_inputs import _FileStamps

    assert _FileStamps.of(tmp_path / "imu.csv").after(series[0], 2) == [
        "2024-05-01T12:00:04.000000", "2024-05-01T12:00:04.010000"]  # forecasts continue it
    data = read_series_data(str(tmp_path / "imu.csv"), horizon=10)
    assert any("the last value (season 1)" in note and "--set season=N" in note
               for note in data.notes)
    data = read_series_data(str(tmp_path / "imu.csv"), horizon=10, season=25)
    assert {w.series.season for w, _ in data.samples["test"]} == {25}
    assert any("repeat the value 25 steps earlier: season=25 as set" in note
               for note in data.notes)
    _sensor_csv(tmp_path / "seconds.csv", 300, column="t")
    series = read_series(tmp_path / "seconds.csv")
    assert len(series[0]) == 300 and series[0].times[:3] == ("0", "0.01", "0.02")
    pd.DataFrame({"step": range(200), "load": np.arange(200.0)}).to_csv(tmp_path / "steps.csv",
                                                                        index=False)
    assert read_series(tmp_path / "steps.csv")[0].times[-1] == "199"
    stamps = pd.date_range("2024-01-01", periods=300, freq="10min")
    pd.DataFrame({"time": stamps.astype(str), "load": np.arange(300.0)}).to_csv(
        tmp_path / "ten.csv", index=False)
    log = ReadLog()
    assert read_series(tmp_path / "ten.csv", log=log)[0].season == 144  # a day of 10 minutes
    assert "the value 144 steps earlier: a day, inferred" in log.season_notes()[0]


def test_irregular_clock_stamps_are_refused_by_value(tmp_path):
    from adaptlab_timeseries.readers import read_series

    stamps = list(pd.date_range("2024-01-01", periods=50, freq="10s").astype(str))
    stamps[20] = "2024-01-01 00:03:24"  # 4 s off a 10 s grid
    pd.DataFrame({"time": stamps, "v": np.arange(50.0)}).to_csv(tmp_path / "jitter.csv",
                                                                index=False)
    with pytest.raises(AdaptlabError, match=r"jitter.csv: column 'time' value "
                                            r"'2024-01-01 00:03:24' lies off the regular "
                                            r"spacing of 10-second"):
        read_series(tmp_path / "jitter.csv")


def _monthly_csv(path, n: int) -> None:
    t = np.arange(n)
    pd.DataFrame({"date": pd.period_range("2000-01", periods=n, freq="M").astype(str),
                  "flow": 10 + np.sin(2 * np.pi * t / 12)}).to_csv(path, index=False)


def test_a_short_series_in_a_folder_is_skipped_by_name(tmp_path):
    from adaptlab_timeseries.datasets import read_series_data

    _monthly_csv(tmp_path / "long.csv", 120)
    _monthly_csv(tmp_path / "short.csv", 40)
    frame = pd.read_csv(tmp_path / "long.csv")
    frame.loc[50:60, "flow"] = np.nan
    frame.to_csv(tmp_path / "gappy.csv", index=False)
    data = read_series_data(str(tmp_path), horizon=6)
    assert {w.series.name for w, _ in data.samples["test"]} == {"long/flow"}
    skipped = {item["file"].rsplit("/", 1)[-1]: item["reason"] for item in data.skipped}
    assert set(skipped) == {"gappy.csv [flow]", "short.csv [flow]"}
    assert "40 steps are too few for horizon 6" in skipped["short.csv [flow]"]
    (tmp_path / "long.csv").unlink()
    with pytest.raises(AdaptlabError, match=r"no usable series left: gappy.csv \[flow\], "
                                            r"short.csv \[flow\] \(.*short.csv \[flow\]: 40 "
                                            r"steps are too few"):
        read_series_data(str(tmp_path), horizon=6)
