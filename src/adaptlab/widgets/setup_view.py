"""The setup panel: domain, data, backbone, strategy (schema-driven controls) and training
settings, checked as they change, and the equivalent ``adaptlab run`` command."""

from __future__ import annotations

import dataclasses
import html
import shlex
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from adaptlab.config import RunConfig
from adaptlab.errors import AdaptlabError
from adaptlab.schema import describe
from adaptlab.widgets.applicability_view import ApplicabilityLine
from adaptlab.widgets.controls import bounded_int_slider, control_for, raw_value
from adaptlab.widgets.memory_view import MemoryPlanView

OWN_DATA = "(your own data)"
# fsdp acts with the training view's Processes above 1; the memory line follows both.
TRAINING_FIELDS = ("epochs", "batch_size", "lr", "schedule", "warmup_ratio", "weight_decay",
                   "train_samples", "image_size", "seed", "device", "fsdp")


class SetupPanel(widgets.VBox):
    """``panel.config()`` is the checked ``RunConfig``; ``panel.command()`` the CLI line.

    Every argument is an initial value (a template's parameters cell passes its own):
    ``settings`` holds training settings by ``RunConfig`` field name, ``strategy_options``
    the strategy's options; an unknown name or a bad value stops with a message naming it.
    """

    def __init__(self, domain: str | None = None, out: str | None = None, *,
                 dataset: str | None = None, data: str | None = None,
                 backbone: str | None = None, strategy: str | None = None,
                 settings: dict[str, Any] | None = None,
                 strategy_options: dict[str, Any] | None = None) -> None:
        from adaptlab.plugins.registry import discover_domains
        from adaptlab.strategies.registry import strategy_names

        found = discover_domains()
        self._domains = found.domains
        failures = "; ".join(f"{e['plugin']}: {e['error']}" for e in found.errors)
        if not self._domains:
            raise AdaptlabError("no domain plugins are installed"
                                + (f" that load (failed: {failures})" if failures else ""))
        if domain is not None and domain not in self._domains:
            broken = [e["error"] for e in found.errors if e["plugin"] == domain]
            raise AdaptlabError(f"domain {domain!r} failed to load: {broken[0]}" if broken else
                                f"domain {domain!r} is not installed; installed: "
                                f"{sorted(self._domains)}")
        self._out = out
        self._extra_settings: dict[str, Any] = {}  # RunConfig fields without a control
        self._quiet = False
        self._lr_typed = False  # until the user types a rate, lr shows the strategy's default
        self._error = ""
        self._blocks: dict[tuple[str, str], Any] = {}  # (domain, backbone) -> layer map
        names = sorted(self._domains)
        self.domain = widgets.Dropdown(options=names, value=domain or names[0],
                                       description="domain")
        # A broken plugin is missing from the picker; saying why beats a silent gap.
        self.plugin_errors = widgets.HTML("".join(
            f"<div><small>domain plugin <b>{html.escape(e['plugin'])}</b> failed to load: "
            f"{html.escape(e['error'])}</small></div>" for e in found.errors))
        self.dataset = widgets.Dropdown(description="dataset")
        self.data_path = widgets.Text(description="data path", placeholder="folder or file")
        self.backbone = widgets.Dropdown(description="backbone")
        self.backbone_info = widgets.HTML()
        self.strategy = widgets.Dropdown(options=strategy_names(), description="strategy")
        self.strategy_box = widgets.VBox()
        self.training_box = widgets.VBox()
        self.message = widgets.HTML()
        self.command_text = widgets.Textarea(description="command", disabled=True,
                                             layout=widgets.Layout(width="95%", height="60px"))
        self.strategy_controls: dict[str, widgets.Widget] = {}
        self.training_controls: dict[str, widgets.Widget] = {}
        self.memory = MemoryPlanView()  # the predicted training memory of this setup
        self.applicability = ApplicabilityLine()  # which strategies apply to the backbone
        super().__init__([self.domain, self.plugin_errors, self.dataset, self.data_path, self.backbone,
                          self.backbone_info, self.strategy, self.applicability,
                          self.strategy_box,
                          widgets.HTML("<b>training</b>"), self.training_box, self.message,
                          self.command_text, self.memory])
        self.add_class("adaptlab-setup-panel")
        self.domain.observe(lambda _: self._domain_changed(), names="value")
        for control in (self.dataset, self.backbone):
            control.observe(lambda _: self._selection_changed(), names="value")
        self.strategy.observe(lambda _: self._strategy_changed(), names="value")
        self.data_path.observe(lambda _: self.refresh(), names="value")
        self._domain_changed()
        self._apply_initial(dataset, data, backbone, strategy, settings or {},
                            strategy_options or {})

    def _apply_initial(self, dataset, data, backbone, strategy, settings, options) -> None:
        def choose(control: widgets.Dropdown, value: str | None, what: str) -> None:
            if value is None:
                return
            if value not in control.options:
                raise AdaptlabError(f"{what} {value!r} is not offered by domain "
                                    f"{self.domain.value!r}; choose from {list(control.options)}")
            control.value = value

        if data is not None:
            choose(self.dataset, OWN_DATA, "dataset")
            self.data_path.value = str(data)
        else:
            choose(self.dataset, dataset, "dataset")
        choose(self.backbone, backbone, "backbone")
        choose(self.strategy, strategy, "strategy")
        training_fields = {e["name"] for e in describe(RunConfig)} - {
            "domain", "dataset", "data", "backbone", "strategy", "strategy_options", "out"}
        for name, value in settings.items():
            if name in self.training_controls:
                self._set_control(self.training_controls[name], value)
            elif name in training_fields:
                self._extra_settings[name] = value
            else:
                raise AdaptlabError(f"setting {name!r} is not a training setting; known: "
                                    f"{sorted(training_fields)}")
        for name, value in options.items():
            if name not in self.strategy_controls:
                raise AdaptlabError(f"strategy {self.strategy.value!r} has no option {name!r}; "
                                    f"its options: {sorted(self.strategy_controls)}")
            self._set_control(self.strategy_controls[name], value)
        self.refresh()

    @staticmethod
    def _set_control(control: widgets.Widget, value: Any) -> None:
        if isinstance(control, widgets.Text):
            control.value = "" if value is None else (
                ",".join(value) if isinstance(value, list | tuple) else str(value))
        else:
            control.value = value

    # -- building controls ------------------------------------------------------------------
    def _spec(self):
        return self._domains[self.domain.value]

    def _domain_changed(self) -> None:
        spec = self._spec()
        options = spec.dataset_names() + ([OWN_DATA] if spec.user_data_loader else [])
        self._quiet = True  # one rebuild at the end, not one per control set here
        try:
            self.dataset.options = options
            self.dataset.value = spec.default_dataset
            self.backbone.options = spec.backbone_names()
            self.backbone.value = spec.default_backbone
            self.strategy.value = spec.default_strategy
        finally:
            self._quiet = False
        self._selection_changed()

    def _selection_changed(self) -> None:
        if self._quiet:
            return
        spec = self._spec()
        own = self.dataset.value == OWN_DATA
        self.data_path.layout.display = None if own else "none"
        if not own and self.dataset.value:
            preferred = spec.dataset(self.dataset.value).backbone
            if preferred and self.backbone.value != preferred:
                self.backbone.value = preferred
                return  # the backbone's observer comes back here
        if self.backbone.value:
            info = spec.backbone(self.backbone.value)
            size = "x".join(str(s) for s in info.input_size)
            self.backbone_info.value = (f"<small>{info.params_millions:g} M parameters, input "
                                        f"{size}; {info.description}</small>")
        self._build_training()
        self._strategy_changed()

    def _build_training(self) -> None:
        from adaptlab.run import config_for

        dataset = None if self.dataset.value == OWN_DATA else self.dataset.value
        defaults = config_for(self.domain.value, dataset=dataset, data="x" if not dataset else None)
        entries = {e["name"]: e for e in describe(RunConfig)}
        self.training_controls = {name: control_for(entries[name], getattr(defaults, name))
                                  for name in TRAINING_FIELDS}
        for control in self.training_controls.values():
            control.observe(lambda _: self.refresh(), names="value")
        self._lr_typed = False
        self.training_controls["lr"].observe(self._lr_changed, names="value")
        self.training_box.children = list(self.training_controls.values())

    def _lr_changed(self, _change) -> None:
        if not self._quiet:  # a change the panel makes itself runs quiet
            self._lr_typed = True

    def _show_default_lr(self) -> None:
        """The rate a run of this strategy gets when none is set (assembly.default_lr), in
        the lr field, unless the user typed one."""
        from adaptlab.assembly import default_lr

        if self._lr_typed:
            return
        dataset = None if self.dataset.value == OWN_DATA else self.dataset.value
        self._quiet = True
        try:
            rate = default_lr(self._spec(), dataset, self.strategy.value, self.backbone.value)
            self.training_controls["lr"].value = f"{rate:g}"
        finally:
            self._quiet = False

    def _strategy_changed(self) -> None:
        from adaptlab.strategies.registry import get_strategy_class

        if self._quiet:
            return
        cls = get_strategy_class(self.strategy.value)
        self._show_default_lr()
        self._show_applicability()
        controls = {e["name"]: control_for(e) for e in describe(cls.config_class)}
        rows = [widgets.HTML(f"<small>{cls.description}</small>")]
        if "k" in controls and self.strategy.value == "freeze":
            blocks = self._layer_map().num_blocks
            start, origin = self._suggested_k(int(controls["k"].value))
            controls["k"] = bounded_int_slider("k", start, -blocks, blocks,
                                               f"frozen blocks from the bottom (of {blocks}); "
                                               "negative counts from the top")
            if origin is not None:
                rows.append(widgets.HTML(f"<small>k starts at {start}: suggested by the "
                                         f"layer-change analysis of {origin}</small>"))
        self.strategy_controls = controls
        for control in controls.values():
            control.observe(lambda _: self.refresh(), names="value")
        rows += list(controls.values())
        if self.strategy.value == "lora":
            rows.append(widgets.HTML(self._lora_preview()))
        self.strategy_box.children = rows
        self.refresh()

    def _suggested_k(self, default: int) -> tuple[int, Path | None]:
        """The k ``adaptlab analyse`` suggested for the latest analysed run on this domain and
        backbone (this session's runs and those beside the run folder), else ``default``."""
        from adaptlab.analysis.layer_change import latest_suggestion
        from adaptlab.compare import find_runs
        from adaptlab.widgets.compare_view import session_runs

        root = Path(self._out).parent if self._out else Path("runs")
        candidates = session_runs() + (find_runs(root, max_depth=2) if root.is_dir() else [])
        found = latest_suggestion(candidates, self.domain.value, self.backbone.value)
        return (default, None) if found is None else found

    def _layer_map(self):
        """The selected backbone's layer map (built once per backbone: it loads weights)."""
        key = (self.domain.value, self.backbone.value)
        if key not in self._blocks:
            from adaptlab.plugins.spec import resolve_reference
            from adaptlab.widgets.jobs import BUILD_LOCK

            spec = self._spec().backbone(self.backbone.value)
            with BUILD_LOCK:
                backbone = resolve_reference(spec.builder)(dict(spec.options))
            self._blocks[key] = backbone
        return self._blocks[key].layer_map

    def _show_applicability(self) -> None:
        """The line under the strategy: worked out on a worker thread, once per backbone."""
        from adaptlab.plugins.spec import resolve_reference

        if not self.backbone.value:
            return
        key = (self.domain.value, self.backbone.value)
        spec = self._spec().backbone(self.backbone.value)
        built = self._blocks.get(key)  # the panel's own copy when it has built one already
        self.applicability.show(
            key, lambda: built or resolve_reference(spec.builder)(dict(spec.options)),
            self.strategy.value)

    def _lora_preview(self) -> str:
        """Which modules LoRA would wrap on this backbone (the adapter plan, before running)."""
        from adaptlab.strategies.peft_family.base import derive_targets

        self._layer_map()
        backbone = self._blocks[(self.domain.value, self.backbone.value)]
        targets = derive_targets(backbone.module, backbone.layer_map)
        shown = ", ".join(targets[:8]) + (f" (+{len(targets) - 8} more)" if len(targets) > 8 else "")
        return f"<small>LoRA wraps {len(targets)} modules of the backbone: {shown}</small>"

    # -- the config ---------------------------------------------------------------------------
    def config(self) -> RunConfig:
        """The run this panel describes, checked; raises AdaptlabError naming the bad value."""
        from adaptlab.assembly import complete_config
        from adaptlab.run import config_for
        from adaptlab.strategies.registry import get_strategy_class

        own = self.dataset.value == OWN_DATA
        if own and not self.data_path.value.strip():
            raise AdaptlabError("data path: choose a folder or file with your data")
        if own and not Path(self.data_path.value.strip()).expanduser().exists():
            raise AdaptlabError(f"data path {self.data_path.value.strip()!r}: no such file or "
                                "folder (relative paths start at the notebook's folder)")
        training = {name: raw_value(c) for name, c in self.training_controls.items()}
        training = {**self._extra_settings, **{k: v for k, v in training.items() if v is not None}}
        options = {name: raw_value(c) for name, c in self.strategy_controls.items()}
        options = {k: v for k, v in options.items() if v is not None}
        strategy = get_strategy_class(self.strategy.value).from_options(options)
        if self.strategy.value == "freeze":
            strategy.check(self._layer_map())
        out = self._out or f"runs/{self.domain.value}-{self.strategy.value}"
        config = config_for(self.domain.value, dataset=None if own else self.dataset.value,
                            data=str(Path(self.data_path.value.strip()).expanduser())
                            if own else None,
                            backbone=self.backbone.value, strategy=self.strategy.value, out=out,
                            **training)
        config = dataclasses.replace(config, strategy_options=options)
        return complete_config(config, self._spec())  # every option, defaults included

    def command(self) -> str:
        """The ``adaptlab run`` line that replays this configuration from a terminal."""
        from adaptlab.run import config_for
        from adaptlab.strategies.registry import resolved_strategy_options

        config = self.config()
        base = config_for(config.domain, dataset=config.dataset, data=config.data)
        parts = ["adaptlab", "run", config.domain]
        parts += ["--data", config.data] if config.data else ["--dataset", config.dataset]
        parts += ["--backbone", config.backbone, "--strategy", config.strategy]
        for name in (*TRAINING_FIELDS, *self._extra_settings):
            if getattr(config, name) != getattr(base, name):
                parts += ["--set", f"{name}={getattr(config, name)}"]
        # The options chosen here; the run records the others at their defaults.
        defaults = resolved_strategy_options(config.strategy, {})
        for name, value in config.strategy_options.items():
            if value != defaults.get(name):
                parts += ["--set", f"{name}={value}"]
        parts += ["--out", config.out]
        return shlex.join(parts)

    def refresh(self) -> None:
        """Check the current values: an error shows inline, else the command."""
        if self._quiet:
            return
        try:
            self.command_text.value = self.command()
            self.message.value = self._error = ""
            self.memory.config_changed(self.config())
        except AdaptlabError as exc:
            self._error = str(exc)
            self.message.value = ("<span style='color:var(--jp-error-color1,#b00020)'>"
                                  f"{html.escape(str(exc))}</span>")
            self.command_text.value = ""
            self.memory.config_changed(None)

    @property
    def error(self) -> str:
        """The message shown inline, as plain text ("" when the values are valid)."""
        return self._error
