"""The setup panel driven programmatically inside a real kernel (nbclient + ipykernel):
controls follow the strategy's schema, bad values are refused inline with their name, and
"copy as command" replays the same RunConfig through the CLI."""

from __future__ import annotations

import pytest

PANEL_SCRIPT = r'''
import dataclasses
import shlex
from adaptlab.strategies.registry import get_strategy_class
from adaptlab.cli import _parser, build_run_config
from adaptlab.assembly import complete_config
from adaptlab.plugins.registry import get_domain
from adaptlab.widgets import setup_panel

panel = setup_panel(domain="wildlife", out="runs/w")
assert panel.error == "", panel.error
head_controls = set(panel.strategy_controls)

panel.strategy.value = "lora"
assert {"r", "alpha", "dropout", "targets"} <= set(panel.strategy_controls) - head_controls
assert "LoRA wraps" in panel.strategy_box.children[-1].value

panel.strategy.value = "freeze"
k = panel.strategy_controls["k"]
assert type(k).__name__ == "IntSlider" and k.max == -k.min == 16, (k.min, k.max)

panel.training_controls["lr"].value = "-1"
assert "lr=-1.0 is below the minimum" in panel.error and panel.command_text.value == ""
panel.training_controls["lr"].value = "abc"
assert "lr='abc' is not a valid float" in panel.error
panel.training_controls["lr"].value = "0.01"
panel.training_controls["epochs"].value = "3"
k.value = 2
assert panel.error == ""

command = panel.command_text.value
args = _parser().parse_args(shlex.split(command)[1:])
replayed = complete_config(build_run_config(args), get_domain("wildlife"))
assert replayed == panel.config(), (replayed, panel.config())  # options resolved and typed
assert replayed.strategy_options == {
    **dataclasses.asdict(get_strategy_class("freeze").config_class()), "k": 2}, replayed.strategy_options

panel.dataset.value = "(your own data)"
assert "data path" in panel.error
panel.domain.value = "timeseries"
assert panel.backbone.value == "fracast" and panel.error == ""
print("PANEL OK", command)
'''


@pytest.mark.slow
def test_setup_panel_in_a_real_kernel(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PANEL_SCRIPT)])
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(out.get("text", "") for out in notebook.cells[0].outputs)
    assert "PANEL OK adaptlab run wildlife" in text
    assert "--set k=2" in text and "--set lr=0.01" in text
