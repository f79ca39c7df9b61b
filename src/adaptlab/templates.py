"""Domain notebook templates, built from a domain's metadata.

One builder serves every domain so no notebook cell is copied between plugins: the domain
supplies its title, datasets, backbones, default strategy, the formats ``--data`` reads
(``data_help``) and optional extra cells (``template_cells``). The first code cell is tagged
``parameters`` (papermill's convention), so a tool can set DATA, STRATEGY or QUICK before
executing it; the setup panel starts from those values. Training waits in its cell
(``await view.train()``) so "Run all", nbclient and papermill run the cells after it on the
finished run.
"""

from __future__ import annotations

from pathlib import Path

from adaptlab.errors import AdaptlabError
from adaptlab.plugins.spec import DomainSpec

QUICK_SETTINGS = {"epochs": 1, "train_samples": 32}


def _markdown_intro(domain: DomainSpec) -> str:
    datasets = "\n".join(f"- `{d.name}`: {d.description}" for d in domain.datasets)
    backbones = "\n".join(f"- `{b.name}`: {b.description}" for b in domain.backbones)
    seed = f"\n\n**The seed paper.** {domain.seed_paper}" if domain.seed_paper else ""
    return (f"# {domain.title}: adapt a pre-trained model\n\n{domain.description}{seed}\n\n"
            f"**Datasets**\n{datasets}\n\n**Backbones**\n{backbones}\n\n"
            "Run the cells in order (or *Run All*). The first code cell holds the starting "
            "choices: set `DATA` to your own data "
            f"({domain.data_help or 'see the domain documentation'}), `STRATEGY` to another "
            "fine-tuning strategy, or `QUICK = True` for a one-epoch check of the set-up; the "
            "setup panel below lets you change any of them before training.")


class TemplateParameterError(AdaptlabError):
    """A value given for the template's parameters cell that it cannot hold."""


# The parameters cell's names, with the types a caller may set them to.
PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "DATA": (str, type(None)), "DATASET": (str, type(None)), "STRATEGY": (str,),
    "QUICK": (bool,), "SEED": (int,), "SETTINGS": (dict,), "EXPLAIN_SAMPLES": (int,),
    "PREDICT_DATA": (str, type(None))}


def _python_literal(value) -> str:
    import json

    return json.dumps(value) if isinstance(value, str) else repr(value)


def _check_parameters(parameters: dict) -> None:
    for name, value in parameters.items():
        if name not in PARAMETER_TYPES:
            raise TemplateParameterError(f"template parameter {name!r} does not exist; choose "
                                         f"from {sorted(PARAMETER_TYPES)}")
        kinds = PARAMETER_TYPES[name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise TemplateParameterError(
                f"template parameter {name}={value!r} must be "
                + " or ".join("None" if k is type(None) else k.__name__ for k in kinds))
        if name in ("SEED", "EXPLAIN_SAMPLES") and value < (1 if name == "EXPLAIN_SAMPLES" else 0):
            raise TemplateParameterError(f"template parameter {name}={value!r} is out of range")


def _parameters(domain: DomainSpec, parameters: dict | None = None) -> str:
    lines = [("DOMAIN", domain.name, ""),
             ("DATA", None, f"or a path: {domain.data_help or 'your own data'}"),
             ("DATASET", None, f'None = "{domain.default_dataset}"; ignored when DATA is set'),
             ("STRATEGY", domain.default_strategy, ""),
             ("QUICK", False, "True: one epoch on a small training subset"),
             ("SEED", 0, ""),
             ("SETTINGS", {}, 'more training settings by name, e.g. {"lr": 1e-3}'),
             ("EXPLAIN_SAMPLES", 8, ""),
             ("PREDICT_DATA", None, "new inputs to predict (a file or folder); None: the "
                                    "run's test split")]
    given = parameters or {}
    return "".join(f"{name} = {_python_literal(given.get(name, value))}"
                   + (f"  # {comment}" if comment else "") + "\n"
                   for name, value, comment in lines)


_SETUP = """from adaptlab.templates import QUICK_SETTINGS
from adaptlab.widgets import comparison_view, setup_panel, training_view

panel = setup_panel(DOMAIN, data=DATA, dataset=None if DATA else DATASET, strategy=STRATEGY,
                    settings={"seed": SEED, **(QUICK_SETTINGS if QUICK else {}), **SETTINGS})
panel"""

_TRAIN_NOTE = ("## Train\n\nThe run measures the unadapted model first (the baseline), then "
               "adapts it. **Stop** ends it after the current step and keeps a checkpoint; "
               "**Resume** continues from it; **Train** starts a new run with the panel's "
               "current values (each run gets its own folder under `runs/`). The curves, costs "
               "and metrics are also written below the view as a plain output, so they stay "
               "in the notebook file.")

_TRAIN = """view = training_view(panel)
display(view)
result = await view.train()"""

_COMPARE_NOTE = ("## Compare runs\n\nEvery run of this session: what it trained, what it cost "
                 "(trainable parameters, memory, time) and what it scored, with the target "
                 "metric plotted against trainable parameters and memory. Train again with "
                 "another strategy above and this table grows; pick runs to narrow it. "
                 "`comparison_view(root=\"runs\")` lists every run in the folder, earlier "
                 "sessions' too.")

_COMPARE = """compare = comparison_view()
compare.show()"""


def _explain_note(domain: DomainSpec) -> str:
    defaults = ", ".join(f"{k}={v}" for k, v in domain.explain_defaults.items()) or "none"
    return ("## What the adapted model looks at\n\nAttributions with this domain's defaults "
            f"({defaults}), checked (faithfulness, infidelity and sensitivity, the "
            "randomisation test) and compared with the unadapted model. The report is one "
            "HTML file in the run folder; it is also shown here and saved with the notebook. "
            "The **Explain** button above does the same for the run you pick.")


_EXPLAIN = """explanation = await compare.explain(samples=2 if QUICK else EXPLAIN_SAMPLES,
                                    checks=not QUICK)"""


_PREDICT_NOTE = ("## Predict on new data\n\nThe adapted model applied to inputs it has not "
                 "seen, with the run's own preprocessing: set `PREDICT_DATA` (a file or folder "
                 "read as the set-up reads data; labels, if any, are ignored) or use the "
                 "**Predict** panel above. The whole table is a CSV in the run folder "
                 "(`predictions/`); the same from a terminal is `adaptlab predict RUN_DIR "
                 "--data PATH`. With an attribution method named, the drawn inputs show what "
                 "the model looked at for its prediction.")

_PREDICT = """predictions = await compare.predict(PREDICT_DATA, count=2 if QUICK else 4,
                                    method=None if QUICK else "default")
predictions.table.head(10)"""


def build_template(domain: DomainSpec, parameters: dict | None = None):
    """The domain's template notebook as an ``nbformat`` notebook object; ``parameters``
    sets values of the first code cell (``{"QUICK": True}``), checked by name and type."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    _check_parameters(parameters or {})
    cells = [new_markdown_cell(_markdown_intro(domain)),
             new_code_cell(_parameters(domain, parameters), metadata={"tags": ["parameters"]}),
             new_markdown_cell("## Set up\n\nDomain, data, backbone, strategy (its own "
                               "controls) and training settings; a bad value shows here with "
                               "its name, and `command` is the same run for a terminal."),
             new_code_cell(_SETUP),
             new_markdown_cell(_TRAIN_NOTE),
             new_code_cell(_TRAIN),
             new_markdown_cell(_COMPARE_NOTE),
             new_code_cell(_COMPARE)]
    for kind, source in domain.template_cells:
        cells.append(new_markdown_cell(source) if kind == "markdown" else new_code_cell(source))
    cells.append(new_markdown_cell(_explain_note(domain)))
    cells.append(new_code_cell(_EXPLAIN))
    cells.append(new_markdown_cell(_PREDICT_NOTE))
    cells.append(new_code_cell(_PREDICT))
    notebook = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "adaptlab": {"domain": domain.name, "template": True}})
    nbformat.validate(notebook)
    return notebook


def write_template(domain: DomainSpec, path: Path, overwrite: bool = False,
                   parameters: dict | None = None) -> Path:
    """Write the template to ``path``; an existing notebook is never replaced silently."""
    import nbformat

    path = Path(path)
    if path.exists() and not overwrite:
        raise AdaptlabError(f"{path} exists; choose another name (a template never overwrites "
                            "a notebook)")
    path.parent.mkdir(parents=True, exist_ok=True)
    from adaptlab.engine.atomic import atomic_write_text

    atomic_write_text(path, nbformat.writes(build_template(domain, parameters)))
    return path
