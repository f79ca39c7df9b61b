"""What fine-tuning changed, block by block (Telly's layer-change analysis).

The run's model and the model it started from (the pre-trained one, or a transfer run's
source) read the same probe batch of the run's own data; each block's outputs are compared
with linear CKA and RSA (:mod:`adaptlab.analysis.similarity`). Telly found the bottom blocks
barely move and the top two move most; the blocks that barely move are the ones ``freeze``
can leave frozen, so the analysis suggests ``k``: the number of leading blocks whose CKA stays
at or above a stated threshold.

>>> from adaptlab import load_run  # doctest: +SKIP
>>> result = analyse_run(load_run("runs/code-full"))  # doctest: +SKIP
>>> result.suggested_k, [round(layer["cka"], 3) for layer in result.layers]  # doctest: +SKIP
(4, [1.0, 0.999, 0.998, 0.991, 0.953, 0.81])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adaptlab.analysis.similarity import linear_cka, rsa
from adaptlab.backbones.features import capture_block_outputs
from adaptlab.backbones.layer_map import LayerMap
from adaptlab.errors import AdaptlabError

DEFAULT_PROBE = 64
# A block whose representations keep a linear CKA of 0.95 with the pre-trained ones has
# moved little (Kornblith et al. report 0.9+ between networks trained from different seeds
# in their lower layers); a higher bar suggests freezing less.
DEFAULT_THRESHOLD = 0.95
ANALYSIS_DIR = "analysis"
RESULT_FILE = "layer_change.json"
PLOT_FILE = "layer_change.png"


@dataclass
class LayerChange:
    """One row per block of the backbone (``layers``, bottom to top) and the suggestion."""

    layers: list[dict[str, Any]]
    suggested_k: int
    threshold: float
    num_blocks: int
    probe: int
    split: str
    compared_with: str
    run_dir: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def rule(self) -> str:
        return (f"k = the number of leading blocks whose linear CKA with the "
                f"{self.compared_with} model stays at or above {self.threshold:g}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rule": self.rule}

    def text(self) -> str:
        lines = [f"{'block':>5}  {'cka':>6}  {'rsa':>6}  name"]
        for row in self.layers:
            lines.append(f"{row['block']:>5}  {row['cka']:6.3f}  {row['rsa']:6.3f}  {row['name']}")
        lines.append(f"suggested k = {self.suggested_k} of {self.num_blocks} blocks ({self.rule}; "
                     f"{self.probe} {self.split} examples)")
        return "\n".join(lines + self.notes)


def suggest_k(similarities: list[float], threshold: float) -> int:
    """How many leading blocks keep a similarity at or above ``threshold``."""
    count = 0
    for value in similarities:
        if value < threshold:
            break
        count += 1
    return count


def analyse_run(loaded, probe: int = DEFAULT_PROBE, threshold: float = DEFAULT_THRESHOLD,
                split: str | None = None) -> LayerChange:
    """Compare ``loaded`` (:class:`adaptlab.run_loading.LoadedRun`) block by block with the
    model it started from, on the first ``probe`` examples of ``split`` (default: val, else
    test, else train), read without augmentation."""
    if not 0.0 < threshold <= 1.0:
        raise AdaptlabError(f"--threshold {threshold}: give a similarity in (0, 1]")
    if probe < 3:
        raise AdaptlabError(f"--probe {probe}: similarity needs at least 3 examples")
    split, inputs = probe_batch(loaded, probe, split)
    adapted = block_representations(loaded.model, loaded.layer_map, inputs)
    with loaded.unadapted() as before_model:
        before = block_representations(before_model, loaded.layer_map, inputs)
    rows, notes = [], []
    for index, (name, after_rep, before_rep) in enumerate(zip(
            _block_names(loaded.layer_map), adapted, before, strict=True)):
        after_rep, before_rep, pooled = comparable(after_rep, before_rep)
        if pooled:
            notes.append(f"block {index}: the two models' outputs differ in token count "
                         "(prompt tokens); compared after averaging over tokens")
        rows.append({"name": name, "block": index, "cka": linear_cka(before_rep, after_rep),
                     "rsa": rsa(before_rep, after_rep)})
    count = adapted[0].shape[0] if adapted else 0
    return LayerChange(rows, suggest_k([row["cka"] for row in rows], threshold), threshold,
                       loaded.layer_map.num_blocks, count, split, loaded.before_label,
                       str(loaded.run_dir), notes)


def probe_batch(loaded, probe: int, split: str | None) -> tuple[str, Any]:
    """The first ``probe`` examples of the split, with the run's evaluation preprocessing."""
    from torch.utils.data import DataLoader

    from adaptlab.data.torch_datasets import make_torch_dataset

    splits = [split] if split else ["val", "test", "train"]
    chosen = next((s for s in splits if loaded.data.samples.get(s)), None)
    if chosen is None:
        raise AdaptlabError(f"{loaded.run_dir}: the run's data has no {' / '.join(splits)} "
                            "examples to probe with")
    dataset = make_torch_dataset(loaded.data, chosen, loaded.backbone, False,
                                 {"image_size": loaded.config.image_size,
                                  "seed": loaded.config.seed})
    if len(dataset) < 3:
        raise AdaptlabError(f"{loaded.run_dir}: the {chosen} split holds {len(dataset)} "
                            "examples; similarity needs at least 3 (choose --split)")
    loader = DataLoader(dataset, batch_size=min(probe, len(dataset)), shuffle=False,
                        collate_fn=getattr(dataset, "collate", None))
    inputs, _ = next(iter(loader))
    return chosen, inputs


@torch.no_grad()
def block_representations(model: nn.Module, layer_map: LayerMap, inputs: Any
                          ) -> list[torch.Tensor]:
    """Each block's output for ``inputs``, as ``[examples, ...]`` float tensors on the CPU."""
    from adaptlab.tasks.base import move_to

    device = next(model.parameters()).device
    located = locate_layer_map(model, layer_map)
    was_training = model.training
    model.eval()
    try:
        captured = capture_block_outputs(model, located, None,
                                         lambda: model(move_to(inputs, device)))
    finally:
        model.train(was_training)
    return [output.detach().float().cpu() for output in captured.blocks]


def locate_layer_map(model: nn.Module, layer_map: LayerMap) -> LayerMap:
    """``layer_map`` as named inside ``model``: a wrapper a strategy put around the task
    model (peft's ``base_model.model.``) prefixes every name the same way."""
    modules = dict(model.named_modules())
    probe = next(name for block in layer_map.blocks for name in block)
    if probe in modules:
        return layer_map
    prefixes = {name[: -len(probe)].rstrip(".") for name in modules
                if name.endswith("." + probe)}
    if len(prefixes) != 1:
        raise AdaptlabError(f"cannot find block {probe!r} in the adapted model "
                            f"(candidates: {sorted(prefixes)[:3]})")
    return layer_map.prefixed(prefixes.pop(), layer_map.head)


def _flat(output: torch.Tensor) -> torch.Tensor:
    return output.reshape(output.shape[0], -1)


def comparable(after: torch.Tensor, before: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Both outputs as ``[examples, features]``: flattened (Kornblith et al. compare
    flattened feature maps), or averaged over tokens where the adapted model carries extra
    tokens (prompts) and the token positions no longer correspond."""
    if after.shape == before.shape:
        return _flat(after), _flat(before), False
    if after.ndim == before.ndim == 3 and after.shape[2] == before.shape[2]:
        return after.mean(dim=1), before.mean(dim=1), True
    raise AdaptlabError(f"a block's output is {tuple(after.shape)} after adaptation and "
                        f"{tuple(before.shape)} before; these cannot be compared")


def _block_names(layer_map: LayerMap) -> list[str]:
    """A block's name: its last entry (the module whose output leaves the block)."""
    return [block[-1] for block in layer_map.blocks]


def layer_change_figure(result: LayerChange):
    """CKA and RSA against block depth, the threshold, and the suggested frozen blocks
    shaded (a matplotlib ``Figure``, made without pyplot)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.0), layout="constrained")
    axis = fig.subplots()
    depth = [row["block"] for row in result.layers]
    axis.plot(depth, [row["cka"] for row in result.layers], marker="o", label="linear CKA")
    axis.plot(depth, [row["rsa"] for row in result.layers], marker="s", label="RSA")
    axis.axhline(result.threshold, color="grey", linestyle="--", linewidth=1,
                 label=f"threshold {result.threshold:g}")
    if result.suggested_k:
        axis.axvspan(-0.5, result.suggested_k - 0.5, color="tab:green", alpha=0.12,
                     label=f"suggested frozen: k = {result.suggested_k}")
    axis.set_xlabel("block (bottom to top)", fontsize=8)
    axis.set_ylabel(f"similarity to the {result.compared_with} model", fontsize=8)
    axis.set_xticks(depth)
    axis.tick_params(labelsize=7)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return fig


def write_analysis(result: LayerChange, run_dir: str | Path) -> list[Path]:
    """``RUN_DIR/analysis/layer_change.json`` and ``.png``, each written atomically."""
    import json

    from adaptlab.compare import figure_png
    from adaptlab.engine.atomic import atomic_write_text, atomic_write_with

    folder = Path(run_dir) / ANALYSIS_DIR
    folder.mkdir(exist_ok=True)
    json_path, png_path = folder / RESULT_FILE, folder / PLOT_FILE
    atomic_write_text(json_path, json.dumps(result.to_dict(), indent=2) + "\n")
    png = figure_png(layer_change_figure(result), dpi=100)
    atomic_write_with(png_path, lambda tmp: Path(tmp).write_bytes(png))
    return [json_path, png_path]


def read_analysis(run_dir: str | Path) -> dict[str, Any] | None:
    """The analysis a run folder holds, or None."""
    import json

    path = Path(run_dir) / ANALYSIS_DIR / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def latest_suggestion(run_dirs: list[Path], domain: str, backbone: str
                      ) -> tuple[int, Path] | None:
    """The suggested k of the most recently analysed of ``run_dirs`` trained on ``domain``
    with ``backbone`` (a k is a count of that backbone's blocks), with its run folder."""
    import json

    found: list[tuple[float, int, Path]] = []
    for run_dir in map(Path, run_dirs):
        path = run_dir / ANALYSIS_DIR / RESULT_FILE
        config = run_dir / "config.json"
        if not (path.is_file() and config.is_file()):
            continue
        settings = json.loads(config.read_text())
        if settings.get("domain") == domain and settings.get("backbone") == backbone:
            found.append((path.stat().st_mtime, json.loads(path.read_text())["suggested_k"],
                          run_dir))
    if not found:
        return None
    _, k, run_dir = max(found, key=lambda item: item[0])
    return k, run_dir
