"""Derive the embedded CMIP6 demo: monthly Arctic air temperature from each climate model.

Reads every ``Amon/ta`` NetCDF file of the ``esmvaltool-sample-data`` package (install it with
``--no-deps``) through this plugin's own NetCDF reader (area-weighted mean over the small
polar box, one series per pressure level), joins each model's files in time, cuts at the
common end (2014-12) and writes one wide CSV (time column + one column per model and level)
plus SOURCES.json with each model's licence line. Run from the repository root:

    python domains/timeseries/scripts/derive_demo.py
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections import defaultdict
from pathlib import Path

from adaptlab_timeseries.readers import netcdf_columns

OUT = Path(__file__).resolve().parents[1] / "src" / "adaptlab_timeseries" / "demo_data"
END = "2014-12"
# Two E3SM models report values down to 16 K at 1000 hPa in months when the level lies under
# the polar surface (partially masked cells); nothing physical is outside this range there.
PLAUSIBLE_K = (180.0, 330.0)
# Its data licence is CC-BY-NC-SA: a non-commercial clause has no place in an Apache-2.0
# project's demo. Every other model's is CC-BY-SA 4.0.
EXCLUDED = {"IPSL-CM6A-LR"}
LEVELS = {"ta_plev100000": "1000hPa", "ta_plev92500": "925hPa"}


def main() -> None:
    import xarray as xr

    spec = importlib.util.find_spec("esmvaltool_sample_data")
    if spec is None or spec.origin is None:
        raise SystemExit("install esmvaltool-sample-data (pip install --no-deps)")
    root = Path(spec.origin).parent / "data" / "timeseries" / "CMIP6"
    files = sorted(root.glob("**/Amon/ta/**/*.nc"))
    values: dict[str, dict[str, float]] = defaultdict(dict)
    licences: dict[str, str] = {}
    for file in files:
        model = file.name.split("_")[2]
        if model in EXCLUDED:
            continue
        with xr.open_dataset(file, engine="h5netcdf") as dataset:
            licences[model] = dataset.attrs.get("license", "")
        times, columns = netcdf_columns(file)
        for name, series in columns.items():
            column = f"{model}_{LEVELS[name]}"
            for time, value in zip(times, series, strict=True):
                if time[:7] <= END and PLAUSIBLE_K[0] <= value <= PLAUSIBLE_K[1]:
                    values[column][time[:7]] = float(value)
    columns = sorted(values)
    times = sorted({t for column in columns for t in values[column]})
    lines = ["time," + ",".join(columns)]
    for time in times:
        cells = [f"{values[c][time]:.3f}" if time in values[c] else "" for c in columns]
        lines.append(f"{time}," + ",".join(cells))
    OUT.mkdir(parents=True, exist_ok=True)
    with gzip.open(OUT / "cmip6_arctic_ta_monthly.csv.gz", "wt", compresslevel=9) as handle:
        handle.write("\n".join(lines) + "\n")
    sources = {
        "cmip6_arctic_ta_monthly.csv.gz": {
            "from": "PyPI esmvaltool-sample-data 0.0.4: data/timeseries/CMIP6/**/Amon/ta/**/*.nc "
                    "(CMIP6 historical r1i1p1f1, monthly air temperature, 88-90N 0-1.4E)",
            "derivation": "cos(latitude)-weighted mean over the box per pressure level "
                          "(1000 and 925 hPa), files joined in time, cut at 2014-12; values "
                          "outside 180-330 K (E3SM's partially underground 1000 hPa boxes) "
                          "left missing; IPSL-CM6A-LR left out (non-commercial licence); "
                          "kelvin, 3 decimals",
            "models": len({c.rsplit('_', 1)[0] for c in columns}),
            "licences": {text: sorted(m for m, t in licences.items() if t == text)
                         for text in sorted(set(licences.values()))},
        }
    }
    (OUT / "SOURCES.json").write_text(json.dumps(sources, indent=1) + "\n")
    print(f"{len(columns)} series, {len(times)} months ({times[0]} to {times[-1]})")


if __name__ == "__main__":
    main()
