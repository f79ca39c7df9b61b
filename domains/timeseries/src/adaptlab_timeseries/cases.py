"""Labelled cases as series-classification archives keep them: the UCR/UEA ``.ts`` format
(sktime, aeon), Weka ``.arff`` (univariate, or multivariate through a relational attribute)
and NumPy ``.npz`` with ``X`` ``(cases, channels, length)`` or ``(cases, length)`` and
``y``. A ``NAME_TRAIN`` file pairs with the ``NAME_TEST`` file beside it; a folder holding
one such pair reads as that pair.

Each case is one sample. Missing values (``?``, NaN; unequal-length cases padded at the end)
go through the series gap rule channel by channel, so a case with a long interior gap is
skipped and listed. The backbone reads one channel, so the channels of a multivariate case
are joined end to end, each scaled to [0, 1] within its case first (otherwise the clip's one
min-max scaling would flatten a channel of small units next to one of large units).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adaptlab.data.series import MAX_GAP_DEFAULT, Series, apply_gap_rule
from adaptlab.errors import AdaptlabError
from adaptlab_timeseries.readers import ReadLog

CASE_SUFFIXES = (".ts", ".arff", ".npz")


@dataclass
class Cases:
    """One file's cases: ``values[i]`` is ``(channels, length)`` with NaN for missing values;
    ``where[i]`` says where case ``i`` sits in the file (a line) for messages."""

    path: Path
    values: list[np.ndarray] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)


def is_case_file(path: Path) -> bool:
    return path.name.lower().endswith(CASE_SUFFIXES)


def case_files(path: Path) -> tuple[Path, Path | None] | None:
    """(train file, its test file or None) when ``path`` is a case file or a folder holding
    case files at its top; None for anything else (tables, class folders)."""
    if path.is_file():
        if not is_case_file(path):
            return None
        stem, suffix = path.name[:-len(path.suffix)], path.suffix
        if stem.upper().endswith("_TRAIN"):
            partner = next((p for p in path.parent.iterdir() if p.suffix.lower() == suffix.lower()
                            and p.name[:-len(p.suffix)].upper() == stem[:-6].upper() + "_TEST"),
                           None)
            return path, partner
        return path, None
    if not path.is_dir():
        return None
    found = sorted(p for p in path.iterdir() if p.is_file() and is_case_file(p))
    if not found:
        return None
    trains = [p for p in found if p.name[:-len(p.suffix)].upper().endswith("_TRAIN")]
    if len(trains) == 1:
        return case_files(trains[0])
    if len(found) == 1:
        return found[0], None
    raise AdaptlabError(f"{path}: holds {len(found)} case files ({', '.join(p.name for p in found[:6])}); "
                        "pass one file, or keep one NAME_TRAIN / NAME_TEST pair in the folder")


def read_cases(path: Path, labelled: bool = True) -> Cases | tuple[Cases, Cases]:
    """A case file; an ``.npz`` holding ``X_train``/``X_test`` gives (train, test)."""
    name = path.name.lower()
    if name.endswith(".ts"):
        return read_ts(path, labelled)
    if name.endswith(".arff"):
        return read_arff(path, labelled)
    return read_npz(path, labelled)


def read_ts(path: Path, labelled: bool = True) -> Cases:
    """The sktime/aeon ``.ts`` text format. Parsed here because no installed library reads
    it (sktime and aeon would bring their whole toolkits for one file format)."""
    out, header = Cases(path), {}
    in_data, channels = False, None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AdaptlabError(f"{path}: cannot read as a .ts text file ({exc})") from exc
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}: line {number}"
        if not in_data:
            if not line.startswith("@"):
                raise AdaptlabError(f"{where}: expected a header tag (@problemName, "
                                    f"@classLabel, ..., @data), found {line[:40]!r}")
            tag, _, rest = line[1:].partition(" ")
            tag, words = tag.lower(), rest.split()
            if tag == "data":
                in_data = True
                channels = _ts_header(header, out, where, labelled)
            elif tag == "classlabel":
                if not words or words[0].lower() not in ("true", "false"):
                    raise AdaptlabError(f"{where}: @classLabel must be true (then the class "
                                        "names) or false")
                header["classlabel"] = words[0].lower() == "true"
                out.classes = words[1:]
            else:
                header[tag] = words[0].lower() if words else ""
            continue
        values, label = _ts_case(line, where, header.get("classlabel", False), channels)
        if label is not None and label not in out.classes:
            raise AdaptlabError(f"{where}: class label {label!r} is not among @classLabel "
                                f"{' '.join(out.classes)}")
        channels = channels or len(values)
        out.values.append(values)
        out.labels.append(label)
        out.where.append(f"line {number}")
    if not in_data:
        raise AdaptlabError(f"{path}: no @data line; not a .ts file")
    return _checked(out, header.get("equallength") == "true")


def _ts_header(header: dict, out: Cases, where: str, labelled: bool) -> int | None:
    """The channel count the header promises (None: the first case sets it)."""
    if header.get("timestamps") == "true":
        raise AdaptlabError(f"{where}: @timeStamps true is not read; write the cases without "
                            "time stamps (values only)")
    if labelled and not header.get("classlabel"):
        raise AdaptlabError(f"{where}: the header has no @classLabel true A B ...; a "
                            "classification set needs its class labels")
    if header.get("univariate") == "true":
        return 1
    if header.get("dimensions", "").isdigit():
        return int(header["dimensions"])
    return None


def _ts_case(line: str, where: str, has_label: bool, channels: int | None
             ) -> tuple[np.ndarray, str | None]:
    fields = line.split(":")
    label = fields.pop().strip() if has_label else None
    if has_label and not fields:
        raise AdaptlabError(f"{where}: no values before the class label")
    if channels is not None and len(fields) != channels:
        raise AdaptlabError(f"{where}: {len(fields)} channel(s) separated by ':', the file's "
                            f"cases have {channels}")
    rows = []
    for c, text in enumerate(fields, start=1):
        row = []
        for k, value in enumerate(text.split(","), start=1):
            value = value.strip()
            try:
                row.append(np.nan if value in ("?", "") or value.lower() == "nan"
                           else float(value))
            except ValueError:
                raise AdaptlabError(f"{where}: channel {c} value {k} holds {value[:20]!r}, "
                                    "not a number") from None
        rows.append(row)
    length = max(len(row) for row in rows)
    values = np.full((len(rows), length), np.nan)
    for c, row in enumerate(rows):
        values[c, :len(row)] = row
    return values, label


def read_arff(path: Path, labelled: bool = True) -> Cases:
    """Weka ARFF through scipy.io.arff, which reads UCR's numeric attributes and UEA's
    relational one; the class is the last nominal attribute."""
    from scipy.io import arff

    try:
        data, meta = arff.loadarff(path)
    except Exception as exc:  # scipy raises ParseArffError, ValueError, IndexError...
        raise AdaptlabError(_arff_error(path, exc)) from exc
    names, types = meta.names(), meta.types()
    out = Cases(path)
    label_name = names[-1] if types[-1] == "nominal" else None
    if label_name is not None:
        out.classes = list(meta[label_name][1])
    elif labelled:
        raise AdaptlabError(f"{path}: the last attribute {names[-1]!r} is {types[-1]}, not a "
                            "nominal class attribute")
    value_names = [n for n in names if n != label_name]
    relational = [n for n, t in zip(names, types, strict=True) if t == "relational"]
    lines = [f"line {number}" for number, _ in _arff_data_lines(path)]
    for i, row in enumerate(data):
        if relational:
            # UEA's layout: each inner row is a channel, each inner attribute a time step.
            values = np.array([[float(v) for v in channel] for channel in row[relational[0]]])
        else:
            values = np.array([[float(row[n]) for n in value_names]])
        label = None
        if label_name is not None:
            label = row[label_name].decode() if isinstance(row[label_name], bytes) \
                else str(row[label_name])
            label = None if label == "?" else label
        out.values.append(values)
        out.labels.append(label)
        out.where.append(lines[i] if len(lines) == len(data) else f"data row {i + 1}")
    return _checked(out, False)


def _arff_data_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of each data row: scipy's cases come without them."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    start = next((i for i, line in enumerate(lines) if line.strip().lower().startswith("@data")),
                 len(lines))
    return [(number, line.strip()) for number, line in enumerate(lines[start + 1:], start + 2)
            if line.strip() and not line.strip().startswith("%")]


def _arff_error(path: Path, exc: Exception) -> str:
    """scipy's message names no line: find the first data row with a field that is not a
    number, or with another field count than the first row."""
    counts = None
    for number, line in _arff_data_lines(path):
        fields = _split_arff_row(line)
        for k, value in enumerate(fields[:-1], start=1):  # the last field is the class
            inner = value.strip()
            quoted = inner[:1] in ("'", '"')
            parts = inner.strip("'\"").replace("\\n", ",").split(",") if quoted else [inner]
            for part in parts:
                part = part.strip()
                if part not in ("?", "") and not _is_number(part):
                    return f"{path}: line {number}: field {k} holds {part[:20]!r}, not a number"
        widths = [{len(r.split(",")) for r in f.strip("'\"").split("\\n")} for f in fields]
        counts = counts or widths
        if len(widths) != len(counts) or any(len(w) > 1 for w in widths) or widths != counts:
            return (f"{path}: line {number}: {len(fields)} fields of "
                    f"{[sorted(w) for w in widths]} values, the first data row has "
                    f"{len(counts)} of {[sorted(w) for w in counts]}")
    return f"{path}: cannot read as ARFF ({type(exc).__name__}: {exc})"


def _split_arff_row(line: str) -> list[str]:
    fields, current, quote = [], "", None
    for char in line:
        if quote:
            current += char
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
            current += char
        elif char == ",":
            fields.append(current)
            current = ""
        else:
            current += char
    return fields + [current]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_npz(path: Path, labelled: bool = True) -> Cases | tuple[Cases, Cases]:
    """``X`` and ``y``, or ``X_train``/``y_train`` with ``X_test``/``y_test``. Loaded with
    ``allow_pickle=False``: an object array (a pickle) is refused, never executed."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise AdaptlabError(f"{path}: holds Python objects (a pickle), which are not "
                                "loaded; save X as numbers and y as strings or "
                                "integers") from exc
        raise AdaptlabError(f"{path}: cannot read as .npz ({exc})") from exc
    except Exception as exc:  # zipfile and numpy raise several types for a damaged file
        raise AdaptlabError(f"{path}: cannot read as .npz ({type(exc).__name__}: {exc})") from exc
    if "X_train" in arrays and "X_test" in arrays:
        train = _npz_cases(path, arrays, "X_train", "y_train", labelled)
        test = _npz_cases(path, arrays, "X_test", "y_test", labelled)
        return train, test
    return _npz_cases(path, arrays, "X", "y", labelled)


def _npz_cases(path: Path, arrays: dict, x_key: str, y_key: str, labelled: bool) -> Cases:
    if x_key not in arrays:
        raise AdaptlabError(f"{path}: no array {x_key!r} (arrays: {sorted(arrays)})")
    x = arrays[x_key]
    if not np.issubdtype(x.dtype, np.number) or x.ndim not in (2, 3):
        raise AdaptlabError(f"{path}: array {x_key!r} must be numbers shaped (cases, channels, "
                            f"length) or (cases, length), got {x.dtype} {x.shape}")
    x = x[:, None, :] if x.ndim == 2 else x
    out = Cases(path, values=[case.astype(np.float64) for case in x],
                where=[f"{x_key}[{i}]" for i in range(len(x))])
    if y_key not in arrays:
        if labelled:
            raise AdaptlabError(f"{path}: no array {y_key!r} of labels beside {x_key!r}")
        out.labels = [None] * len(x)
        return out
    y = arrays[y_key]
    if y.shape != (len(x),):
        raise AdaptlabError(f"{path}: array {y_key!r} has shape {y.shape}, expected "
                            f"({len(x)},): one label per case of {x_key!r}")
    out.labels = [str(v) for v in y.tolist()]
    out.classes = [str(v) for v in sorted(set(y.tolist()))]
    return out


def _checked(out: Cases, equal_length: bool) -> Cases:
    if not out.values:
        raise AdaptlabError(f"{out.path}: holds no case")
    if equal_length:
        lengths = [case.shape[1] for case in out.values]
        odd = next((i for i, n in enumerate(lengths) if n != lengths[0]), None)
        if odd is not None:
            raise AdaptlabError(f"{out.path}: {out.where[odd]}: {lengths[odd]} values per "
                                f"channel, the first case has {lengths[0]} (@equalLength true)")
    return out


def cases_to_series(cases: Cases, max_gap: int = MAX_GAP_DEFAULT,
                    log: ReadLog | None = None) -> list[tuple[Series, str | None]]:
    """(series, label) per usable case; a case the gap rule refuses is skipped and listed."""
    out, filled = [], 0
    for i, (values, label) in enumerate(zip(cases.values, cases.labels, strict=True)):
        name = f"{cases.path.stem} case {i + 1}"
        try:
            parts = []
            for c, channel in enumerate(values):
                kept, _, report = apply_gap_rule(
                    channel, f"{cases.path}: {cases.where[i]} channel {c + 1}", max_gap)
                filled += report.filled
                parts.append(kept if len(values) == 1 else _unit_scaled(kept))
        except AdaptlabError as exc:
            if log is None or not log.skip_refused:
                raise
            log.skipped.append({"file": f"{cases.path} [case {i + 1}]", "reason": str(exc)})
            continue
        out.append((Series(name, np.concatenate(parts).astype(np.float32), season=1,
                           origin=f"{cases.path} [case {i + 1}]"), label))
    if log is not None:
        if filled:
            log.notes.append(f"{cases.path}: {filled} missing value(s) filled by linear "
                             f"interpolation (gaps of at most {max_gap} steps)")
        if len(cases.values[0]) > 1:
            log.notes.append(f"{cases.path}: {len(cases.values[0])} channels per case, each "
                             "scaled to [0, 1] within its case and joined end to end (the "
                             "backbone reads one channel)")
    return out


def _unit_scaled(values: np.ndarray) -> np.ndarray:
    low = float(values.min())
    return (values - low) / max(float(values.max()) - low, 1e-12)
