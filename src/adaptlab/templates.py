"""Domain notebook templates, built from a domain's metadata.

One builder serves every domain so no notebook cell is copied between plugins: the domain
supplies its title, datasets, backbones, default strategy, the formats ``--data`` reads
(``data_help``) and optional extra cells (``template_cells``). The first code cell is tagged
``parameters`` (papermill's convention), so a tool can set DATA, STRATEGY or QUICK before
executing it; the widgets replace that cell with controls.
"""

from __future__ import annotations

from pathlib import Path

from adaptlab.errors import AdaptlabError
from adaptlab.plugins.spec import DomainSpec

QUICK_SETTINGS = {"epochs": 1, "train_samples": 32}


def _markdown_intro(domain: DomainSpec) -> str:
    datasets = "\n".join(f"- `{d.name}`: {d.description}" for d in domain.datasets)
    backbones = "\n".join(f"- `{b.name}`: {b.description}" for b in domain.backbones)
    return (f"# {domain.title}: adapt a pre-trained model\n\n{domain.description}\n\n"
            f"**Datasets**\n{datasets}\n\n**Backbones**\n{backbones}\n\n"
            "Run the cells in order. The first code cell holds every choice: set `DATA` to "
            f"your own data ({domain.data_help or 'see the domain documentation'}), "
            "`STRATEGY` to another fine-tuning strategy, or `QUICK = True` for a one-epoch "
            "check of the set-up.")


def _parameters(domain: DomainSpec) -> str:
    return (f'DOMAIN = "{domain.name}"\n'
            f"DATA = None  # or a path: {domain.data_help or 'your own data'}\n"
            f'DATASET = None  # None = "{domain.default_dataset}"; ignored when DATA is set\n'
            f'STRATEGY = "{domain.default_strategy}"\n'
            "QUICK = False  # True: one epoch on a small training subset\n"
            "SEED = 0\n")


_CONFIG = """import time

from adaptlab.run import config_for, run
from adaptlab.strategies.registry import strategy_names
from adaptlab.templates import QUICK_SETTINGS

print("strategies:", ", ".join(strategy_names()))
config = config_for(DOMAIN, data=DATA, dataset=None if DATA else DATASET, strategy=STRATEGY,
                    seed=SEED, out=f"runs/{DOMAIN}-{STRATEGY}-{time.strftime('%Y%m%d-%H%M%S')}",
                    **(QUICK_SETTINGS if QUICK else {}))
config"""

_RUN = """result = run(config)
print(result.headline)"""

_COMPARE = """from adaptlab.summary import comparison_rows, cost_rows

for row in comparison_rows(result.metrics):
    print("  ".join(f"{cell:>14}" for cell in row))
print()
for name, value in cost_rows(result.costs):
    print(f"{name:>28}: {value}")"""


def _explain_note(domain: DomainSpec) -> str:
    defaults = ", ".join(f"{k}={v}" for k, v in domain.explain_defaults.items()) or "none"
    return ("## What the adapted model looks at\n\nAttributions with this domain's defaults "
            f"({defaults}), checked (faithfulness, infidelity and sensitivity, the "
            "randomisation test) and compared with the unadapted model. The report is one "
            "HTML file in the run folder; it is also shown here and saved with the notebook.")


_EXPLAIN = """import html

from IPython.display import HTML, display

from adaptlab.explain import explain

explanation = explain(result.run_dir, samples=2 if QUICK else 8, checks=not QUICK)
report = result.run_dir / "report" / "index.html"
print("report:", report, "| method:", explanation.result.method)
display(HTML(f'<iframe srcdoc="{html.escape(report.read_text())}" '
             'style="width:100%;height:640px;border:0"></iframe>'))"""


def build_template(domain: DomainSpec):
    """The domain's template notebook as an ``nbformat`` notebook object."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    cells = [new_markdown_cell(_markdown_intro(domain)),
             new_code_cell(_parameters(domain), metadata={"tags": ["parameters"]}),
             new_code_cell(_CONFIG),
             new_markdown_cell("## Train\n\nThe run measures the unadapted model first (the "
                               "baseline), then adapts it; the run folder keeps checkpoints, "
                               "so an interrupted run continues with `run(config, "
                               "resume=True)`."),
             new_code_cell(_RUN),
             new_markdown_cell("## Adapted against unadapted, and what it cost"),
             new_code_cell(_COMPARE)]
    for kind, source in domain.template_cells:
        cells.append(new_markdown_cell(source) if kind == "markdown" else new_code_cell(source))
    cells.append(new_markdown_cell(_explain_note(domain)))
    cells.append(new_code_cell(_EXPLAIN))
    notebook = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "adaptlab": {"domain": domain.name, "template": True}})
    nbformat.validate(notebook)
    return notebook


def write_template(domain: DomainSpec, path: Path, overwrite: bool = False) -> Path:
    """Write the template to ``path``; an existing notebook is never replaced silently."""
    import nbformat

    path = Path(path)
    if path.exists() and not overwrite:
        raise AdaptlabError(f"{path} exists; choose another name (a template never overwrites "
                            "a notebook)")
    path.parent.mkdir(parents=True, exist_ok=True)
    from adaptlab.engine.atomic import atomic_write_text

    atomic_write_text(path, nbformat.writes(build_template(domain)))
    return path
