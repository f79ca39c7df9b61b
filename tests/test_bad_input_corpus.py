"""The bad-input corpus (issue 21): every case driven through the real CLI must stop before
training with exit status 2 and one line naming the file, field or value, no traceback, and
no run folder written or changed. Widget cases also go through the setup panel, which must
show the same message and raise nothing.

Inputs come from ``tests/corpus/make_corpus.py``, built per case into a temporary folder.
``pytest --collect-only -q tests/test_bad_input_corpus.py`` counts the cases; each id starts
with its domain.
"""

from __future__ import annotations

import html
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import run_cli, tree_digest

sys.path.insert(0, str(Path(__file__).parent / "corpus"))
import make_corpus  # noqa: E402

# Settings that keep any case that wrongly got past its check cheap and off the network.
QUICK = ["--device", "cpu", "--epochs", "1", "--quiet"]


@dataclass(frozen=True)
class Case:
    id: str
    domain: str
    build: str  # a make_corpus builder: writes the input, returns {data}
    argv: tuple[str, ...]  # after "adaptlab"; {data}, {root}, {out} filled in
    expect: tuple[str, ...]  # in the one error line; {data}, {root} filled in
    widget: dict = field(default_factory=dict)  # settings the setup panel gets, if any


def run_case(domain, build, *extra, expect, widget=None, id):
    return Case(id, domain, build, ("run", domain, "--data", "{data}", "--out", "{out}",
                                    *QUICK, *extra), expect, widget or {})


def predict_case(domain, build, *argv, expect, id):
    return Case(id, domain, build, argv, expect)


CASES = [
    # wildlife: image folders, --set typos, widget ranges, run folders of another version
    run_case("wildlife", "images_empty_folder", expect=("{data}", "is empty"),
             id="wildlife-empty-folder"),
    run_case("wildlife", "images_one_class", expect=("{data}", "one class", "'fox'"),
             id="wildlife-one-class"),
    run_case("wildlife", "images_truncated_class", expect=("{data}", "'owl'", "no readable"),
             id="wildlife-truncated-images-in-a-class"),
    run_case("wildlife", "images_all_corrupt", expect=("{data}", "no readable images"),
             id="wildlife-every-image-corrupt"),
    run_case("wildlife", "images_single_file", expect=("{data}", "not a folder"),
             id="wildlife-file-instead-of-folder"),
    run_case("wildlife", "images_good", "--set", "batchsize=4",
             expect=("batchsize", "did you mean batch_size?"), id="wildlife-set-key-typo"),
    run_case("wildlife", "images_good", "--strategy", "lora", "--set", "alpah=8",
             expect=("alpah", "did you mean alpha?"), id="wildlife-set-strategy-option-typo"),
    run_case("wildlife", "images_good", "--set", "image_size=8",
             expect=("image_size=8", "below the minimum 32"), widget={"image_size": 8},
             id="wildlife-widget-image-size-out-of-range"),
    predict_case("wildlife", "run_unknown_config_key", "predict", "{data}", "--data",
                 "{root}/photos", expect=("{data}/config.json", "lr_schedule"),
                 id="wildlife-run-config-with-old-key"),
    predict_case("wildlife", "run_config_not_json", "explain", "{data}", "--samples", "1",
                 expect=("{data}/config.json",), id="wildlife-run-config-not-json"),
    predict_case("wildlife", "run_metrics_not_json", "predict", "{data}", "--data",
                 "{root}/photos", expect=("{data}/metrics.json",),
                 id="wildlife-run-metrics-cut-off"),
    predict_case("wildlife", "run_old_checkpoint_shapes", "predict", "{data}", "--data",
                 "{root}/photos", expect=("{data}/weights.safetensors", "'task_head.", "has shape (5"),
                 id="wildlife-run-checkpoint-of-other-shapes"),
    predict_case("wildlife", "run_old_checkpoint_keys", "predict", "{data}", "--data",
                 "{root}/photos", expect=("model.fc.weight",),
                 id="wildlife-run-checkpoint-of-other-keys"),
    predict_case("wildlife", "run_checkpoint_not_safetensors", "predict", "{data}", "--data",
                 "{root}/photos", expect=("{data}/weights.safetensors",),
                 id="wildlife-run-checkpoint-pickled"),
    predict_case("wildlife", "images_beside_a_run", "run", "wildlife", "--data", "{data}", "--out",
                 "{root}/run", *QUICK, expect=("{root}/run", "already holds a run"),
                 id="wildlife-out-is-a-finished-run"),
    # medical: NIfTI and MedMNIST
    run_case("medical", "nifti_without_label", expect=("loose.nii.gz", "no label"),
             id="medical-nifti-without-label"),
    run_case("medical", "nifti_4d", expect=("series.nii.gz", "(8, 8, 3, 2)"),
             id="medical-nifti-4d-series"),
    run_case("medical", "nifti_nan", expect=("holes.nii.gz", "NaN", "(3, 3, 1)"), id="medical-nifti-nan"),
    run_case("medical", "nifti_one_class", expect=("{data}", "1 class folder"),
             id="medical-nifti-one-class"),
    run_case("medical", "nifti_one_scan_per_class", expect=("{data}", "val split is empty"),
             id="medical-nifti-one-scan-per-class"),
    run_case("medical", "nifti_all_corrupt", expect=("{data}", "no readable NIFTI"),
             id="medical-nifti-every-file-corrupt"),
    run_case("medical", "medmnist_missing_key", expect=("{data}", "'val_labels'"),
             id="medical-npz-missing-labels"),
    run_case("medical", "medmnist_two_channels", expect=("train_images[0]", "(28, 28, 2)"),
             id="medical-npz-two-channels"),
    run_case("medical", "medmnist_multilabel", expect=("{data}", "train_labels", "multi-label"),
             id="medical-npz-multilabel"),
    run_case("medical", "medmnist_pickled", expect=("{data}", "not a readable .npz"),
             id="medical-npz-pickled-objects"),
    run_case("medical", "medical_text_file", expect=("{data}", "expected a MedMNIST .npz"),
             id="medical-text-file"),
    run_case("medical", "nifti_one_class", "--set", "batch_size=0",
             expect=("batch_size=0", "below the minimum 1"), widget={"batch_size": 0},
             id="medical-widget-batch-size-zero"),
    # code: folders, encodings, binary files, JSONL
    run_case("code", "code_one_label", expect=("{data}", "1 label folder"),
             id="code-one-label-folder"),
    run_case("code", "code_broken_encodings", expect=("{data}", "not valid UTF-8"),
             id="code-every-file-in-a-broken-encoding"),
    run_case("code", "code_binary_label", expect=("{data}", "'blobs'"),
             id="code-label-of-binary-files"),
    run_case("code", "jsonl_not_json", expect=("{data} line 2", "not JSON"),
             id="code-jsonl-line-not-json"),
    run_case("code", "jsonl_missing_code", expect=("{data} line 1", "'source'"),
             id="code-jsonl-without-code"),
    run_case("code", "jsonl_one_label", expect=("{data}", "one label ('a')"),
             id="code-jsonl-one-label"),
    run_case("code", "jsonl_utf16", expect=("{data}", "UTF-8"), id="code-jsonl-utf16"),
    run_case("code", "jsonl_few_pairs", expect=("{data}", "3 distinct query/code pairs"),
             id="code-jsonl-three-retrieval-pairs"),
    run_case("code", "code_text_file", expect=("{data}", "expected a .jsonl"),
             id="code-text-file"),
    run_case("code", "jsonl_one_label", "--strategy", "freeze", "--set", "kk=2",
             expect=("kk", "did you mean k?"), id="code-set-strategy-option-typo"),
    # timeseries: gaps, lengths, columns, files
    run_case("timeseries", "series_long_gap", expect=("shop.csv", "6 missing values in a row"),
             id="timeseries-nan-gap-longer-than-max-gap"),
    run_case("timeseries", "series_too_short", "--set", "horizon=24",
             expect=("shop.csv", "24"), id="timeseries-too-few-points-for-horizon"),
    run_case("timeseries", "series_no_time_column", expect=("{data}", "no time column"),
             id="timeseries-no-time-column"),
    run_case("timeseries", "series_not_a_number", expect=("{data}", "'sales'", "'lots'"),
             id="timeseries-value-not-a-number"),
    run_case("timeseries", "series_duplicate_time", expect=("{data}", "2020-02", "twice"),
             id="timeseries-duplicate-time"),
    run_case("timeseries", "series_all_nan", expect=("shop.csv", "no finite value"),
             id="timeseries-all-nan"),
    run_case("timeseries", "series_netcdf_no_time", expect=("{data}", "time dimension"),
             id="timeseries-netcdf-without-time"),
    run_case("timeseries", "series_no_files", expect=("{data}", "no CSV, Parquet or NetCDF"),
             id="timeseries-folder-without-series"),
    run_case("timeseries", "series_corrupt_parquet", expect=("{data}", "cannot read as a table"),
             id="timeseries-corrupt-parquet"),
    run_case("timeseries", "series_good", "--set", "horizon=0",
             expect=("horizon=0", "below the minimum 1"), widget={"horizon": 0},
             id="timeseries-widget-horizon-zero"),
    run_case("timeseries", "series_good", "--set", "max_gapp=2",
             expect=("max_gapp", "did you mean max_gap?"), id="timeseries-set-key-typo"),
    # pointcloud: PLY properties, faces, labels, arrays
    run_case("pointcloud", "ply_missing_z", expect=("a.ply", "'z'"),
             id="pointcloud-ply-without-z"),
    run_case("pointcloud", "obj_no_faces", expect=("a.obj", "no faces"),
             id="pointcloud-mesh-without-faces"),
    run_case("pointcloud", "ply_no_label_property", expect=(".ply", "per-point label"),
             id="pointcloud-ply-without-label-property"),
    run_case("pointcloud", "xyz_not_numbers", expect=("scan.xyz, line 3", "not numbers"),
             id="pointcloud-xyz-header-line"),
    run_case("pointcloud", "xyz_nan", expect=("scan.xyz", "NaN or infinite coordinate"),
             id="pointcloud-xyz-nan"),
    run_case("pointcloud", "npy_pickled", expect=("a.npy", "not a numeric NPY"),
             id="pointcloud-npy-pickled-objects"),
    run_case("pointcloud", "points_no_files", expect=("{data}", "no point-cloud files"),
             id="pointcloud-no-point-files"),
    run_case("pointcloud", "points_labels_file_short", expect=("labels.txt", "label 3"),
             id="pointcloud-labels-file-too-short"),
    run_case("pointcloud", "points_one_class", expect=("{data}", "'chair'"),
             id="pointcloud-one-class-folder"),
    run_case("pointcloud", "stl_zero_area", expect=("a.stl", "zero area"),
             id="pointcloud-mesh-of-zero-area"),
    # weather: variables, label, grids
    run_case("weather", "fields_no_label", expect=("{data}", "no variable 'label'"),
             id="weather-netcdf-without-label"),
    run_case("weather", "fields_no_variable", expect=("{data}", "found none"),
             id="weather-netcdf-without-field-variable"),
    run_case("weather", "fields_no_latitude", expect=("{data}", "'z500'", "latitude"),
             id="weather-netcdf-without-latitude"),
    run_case("weather", "fields_label_mismatch", expect=("{data}", "'label' has shape (25,)"),
             id="weather-label-of-other-length"),
    run_case("weather", "fields_label_values", expect=("{data}", "'label' holds [0, 1, 2]"),
             id="weather-label-not-binary"),
    run_case("weather", "fields_nan", expect=("{data}", "'z500'", "time=5, lat=2, lon=3"),
             id="weather-field-nan"),
    run_case("weather", "fields_corrupt", expect=("{data}", "cannot read as NetCDF"),
             id="weather-corrupt-netcdf"),
    run_case("weather", "fields_csv", expect=("{data}", "not a NetCDF file"),
             id="weather-csv-file"),
    run_case("weather", "fields_empty_zarr", expect=("{data}", "Zarr"),
             id="weather-empty-zarr-store"),
    predict_case("weather", "fields_other_grid", "predict", "{root}/run", "--data", "{data}",
                 expect=("{data}", "another grid", "lat 6 points -20..20"),
                 id="weather-predict-on-mismatched-grid"),
    predict_case("weather", "fields_renamed_variable", "predict", "{root}/run", "--data",
                 "{data}", expect=("{data}", "no variable 'z500'"),
                 id="weather-predict-file-missing-the-variable"),
]


def _fill(text: str, values: dict[str, str]) -> str:
    return text.format(**values)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_by_name(case: Case, tmp_path, capsys, recwarn):
    root = tmp_path / "case"
    data = make_corpus.build(case.build, root)
    if case.domain == "weather" and case.argv[0] == "predict":
        make_corpus.weather_run(root)
    values = {"data": str(data), "root": str(root), "out": str(tmp_path / "new-run")}
    run_dir = root / "run"
    before = tree_digest(run_dir) if run_dir.is_dir() else None

    code, out, err = run_cli([_fill(arg, values) for arg in case.argv], capsys)

    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, f"exit {code}, stderr:\n{err}"
    assert lines[0].startswith("adaptlab: error: ") and "Traceback" not in out + err
    for fragment in case.expect:
        assert _fill(fragment, values) in lines[0], lines[0]
    assert not Path(values["out"]).exists(), "a refused run wrote its folder"
    if before is not None:
        assert tree_digest(run_dir) == before, "a refused command changed the run folder"
    if case.widget:
        _check_setup_panel(case, data, tmp_path, lines[0])


def _check_setup_panel(case: Case, data: Path, tmp_path: Path, cli_line: str) -> None:
    """The panel shows the CLI's message inline (minus the CLI's prefix) and raises nothing."""
    from adaptlab.widgets import setup_panel

    panel = setup_panel(case.domain, data=str(data), out=str(tmp_path / "panel-run"),
                        settings=case.widget)
    message = cli_line.removeprefix("adaptlab: error: ")
    assert panel.error == message
    assert html.escape(message) in panel.message.value
    assert panel.command_text.value == ""
    assert not (tmp_path / "panel-run").exists()
