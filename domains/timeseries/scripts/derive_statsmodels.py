"""Derive the single-series demos from the statsmodels datasets (public domain): Mauna Loa
weekly CO2, El Nino (Nino 1+2) monthly sea-surface temperature, yearly sunspots, and the
Nile's yearly flow. Each becomes a CSV with a time column and one value column, the format
users' own tables have. Needs the statsmodels wheel installed or unpacked on the path (its
data files are read, the package is not imported). Run from the repository root:

    python domains/timeseries/scripts/derive_statsmodels.py
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "adaptlab_timeseries" / "demo_data"
# The record before 1965 has gaps of up to 18 weeks (Mauna Loa's 1964 outage), longer than
# any gap rule should bridge; from 1965 on its gaps are short.
CO2_FROM = "19650101"
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def _rows(folder: Path, name: str) -> list[dict[str, str]]:
    with open(folder / name / f"{name}.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _write(name: str, header: tuple[str, str], rows: list[tuple[str, str]]) -> None:
    with open(OUT / name, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def main() -> None:
    spec = importlib.util.find_spec("statsmodels")
    if spec is None or spec.origin is None:
        raise SystemExit("statsmodels (or its unpacked wheel) must be importable")
    folder = Path(spec.origin).parent / "datasets"
    co2 = _rows(folder, "co2")
    _write("co2_weekly.csv", ("date", "co2_ppm"),
           [(f"{r['date'][:4]}-{r['date'][4:6]}-{r['date'][6:]}", r["co2"]) for r in co2
            if r["date"] >= CO2_FROM])
    elnino = _rows(folder, "elnino")
    _write("elnino_monthly.csv", ("month", "nino12_sst_c"),
           [(f"{r['YEAR'].split('.')[0]}-{i + 1:02d}", r[m]) for r in elnino
            for i, m in enumerate(MONTHS)])
    sunspots = _rows(folder, "sunspots")
    _write("sunspots_yearly.csv", ("year", "sunspot_number"),
           [(r["YEAR"].split(".")[0], r["SUNACTIVITY"]) for r in sunspots])
    nile = _rows(folder, "nile")
    _write("nile_yearly.csv", ("year", "flow_1e8_m3"), [(r["year"], r["volume"]) for r in nile])
    sources = json.loads((OUT / "SOURCES.json").read_text())
    origin = "statsmodels datasets (PyPI statsmodels wheel, datasets/{name}/{name}.csv)"
    sources.update({
        "co2_weekly.csv": {"from": origin.format(name="co2"), "licence": "public domain",
                           "what": "Mauna Loa weekly atmospheric CO2 (Scripps), 1965-2001 "
                                   "(earlier weeks left out: gaps of up to 18 weeks); weeks "
                                   "with no measurement have no row"},
        "elnino_monthly.csv": {"from": origin.format(name="elnino"), "licence": "public domain",
                               "what": "NOAA ERSST v3b Nino 1+2 sea-surface temperature, "
                                       "1950-2010, reshaped from year x month to one column"},
        "sunspots_yearly.csv": {"from": origin.format(name="sunspots"), "licence": "public domain",
                                "what": "yearly sunspot numbers, 1700-2008 (NOAA NGDC)"},
        "nile_yearly.csv": {"from": origin.format(name="nile"), "licence": "public domain",
                            "what": "yearly flow of the Nile at Aswan, 1871-1970"},
    })
    (OUT / "SOURCES.json").write_text(json.dumps(sources, indent=1) + "\n")


if __name__ == "__main__":
    main()
