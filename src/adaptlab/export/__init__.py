"""Use the adapted model outside adaptlab: a finished run exported as a Hugging Face
Hub-compatible folder (safetensors weights, config, preprocessing, model card), optionally
with ONNX or TorchScript beside it, each checked against the run's own outputs.

>>> from adaptlab.export import export_run, load_exported
>>> summary = export_run("runs/lora", "exports/lora", format="onnx")  # doctest: +SKIP
>>> model = load_exported("exports/lora")  # a plain torch module  # doctest: +SKIP
"""

from adaptlab.export.api import FORMATS, export_run
from adaptlab.export.rebuild import load_exported

__all__ = ["FORMATS", "export_run", "load_exported"]
