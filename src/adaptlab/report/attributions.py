"""What ``report/attributions.json`` holds, and the method facts the HTML page shows too.

Its own module so the page (``html.py``) and the writer (``write.py``) both read it without
importing each other.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

JSON_MAP_SIDE = 56  # image maps are pooled to at most this side in the JSON (full size in HTML)


def _json_map(values: torch.Tensor) -> dict[str, Any]:
    """A feature map as nested lists, image maps pooled so the file stays small."""
    shape = list(values.shape)
    if values.dim() == 2 and max(shape) > JSON_MAP_SIDE:
        factor = -(-max(shape) // JSON_MAP_SIDE)
        values = F.avg_pool2d(values[None, None], factor, ceil_mode=True)[0, 0]
    return {"shape": shape, "stored_shape": list(values.shape),
            "values": [round(float(v), 6) for v in values.flatten()]}


def attributions_json(explanation) -> dict[str, Any]:
    """The content of ``attributions.json`` for an :class:`adaptlab.explain.Explanation`."""
    result = explanation.result
    samples = []
    for i, (sample, features) in enumerate(zip(explanation.samples, result.features, strict=True)):
        row = {"index": sample.index, "label": sample.label,
               "label_name": explanation.label_name(sample.label),
               "target": result.targets[i], "target_name": explanation.label_name(result.targets[i]),
               "attribution": _json_map(features)}
        if "tokens" in sample.display:
            row["tokens"] = sample.display["tokens"]
        if "name" in sample.display:
            row["name"] = sample.display["name"]
        if explanation.unadapted_features is not None:
            row["unadapted_attribution"] = _json_map(explanation.unadapted_features[i])
        samples.append(row)
    return {"run": explanation.run.run_dir.name, "split": explanation.split,
            "feature_axes": explanation.target.feature_axes, "method": method_facts(explanation),
            "checks": explanation.checks, "comparison": explanation.comparison,
            "seconds": explanation.seconds, "samples": samples}


def method_facts(explanation) -> dict[str, Any]:
    """Which method ran (after any routing), why, and at what cost."""
    result = explanation.result
    facts = {"requested": result.requested, "used": result.method, "library": result.library,
             "notes": result.notes, "memory_plan": result.plan.text(),
             "rows_per_pass": result.plan.rows,
             "seconds_per_sample": result.seconds / max(1, len(explanation.samples))}
    if result.completeness_gaps:
        facts["completeness_gap_mean"] = sum(result.completeness_gaps) / len(
            result.completeness_gaps)
    return facts
