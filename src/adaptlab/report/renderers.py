"""Renderers: how one modality's attributions are drawn in the report.

A domain picks one by name in ``explain_defaults["renderer"]`` or names its own object
(``"package.module:attribute"``) with the same two methods. The drawing every domain shares
lives here; a domain only adds what is its own (a 3D view, a map projection).
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
import torch

_RENDERERS: dict[str, Any] = {}


def register_renderer(name: str):
    def decorate(cls):
        _RENDERERS[name] = cls()
        return cls

    return decorate


def get_renderer(name: str):
    if name in _RENDERERS:
        return _RENDERERS[name]
    if ":" in name:
        from adaptlab.plugins.spec import resolve_reference

        found = resolve_reference(name)
        return found() if isinstance(found, type) else found
    from adaptlab.errors import AdaptlabError

    raise AdaptlabError(f"unknown renderer {name!r}; built in: {sorted(_RENDERERS)}")


def figure_html(fig, alt: str) -> str:
    """A matplotlib figure as an embedded PNG (the report must open without a network)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _scaled(values: torch.Tensor) -> np.ndarray:
    """Signed values on [-1, 1] (0 stays white in a diverging map), clipped at the 99th
    percentile of magnitudes: pixel attributions are heavy-tailed, and scaling by the single
    largest value leaves every other pixel invisible."""
    array = values.detach().float().numpy()
    peak = float(np.percentile(np.abs(array), 99)) or float(np.abs(array).max()) or 1.0
    return np.clip(array / peak, -1.0, 1.0)


class Renderer:
    def sample(self, sample, maps: list[tuple[str, torch.Tensor]], title: str) -> str:
        raise NotImplementedError

    def class_summary(self, name: str, samples: list, maps: list[torch.Tensor]) -> str:
        raise NotImplementedError


@register_renderer("image")
class ImageRenderer(Renderer):
    """The input, then each map as a heat overlay on it."""

    def sample(self, sample, maps, title):
        plt = _pyplot()
        image = sample.display["image"]
        # squeeze=False: with no maps (a prediction drawn without attributions) one axis.
        fig, axes = plt.subplots(1, len(maps) + 1, figsize=(2.4 * (len(maps) + 1), 2.6),
                                 squeeze=False)
        axes = axes[0]
        axes[0].imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
        axes[0].set_title("input", fontsize=9)
        for axis, (label, values) in zip(axes[1:], maps, strict=True):
            axis.imshow(image.mean(axis=-1), cmap="gray", alpha=0.5)
            axis.imshow(_scaled(values), cmap="bwr", vmin=-1, vmax=1, alpha=0.65)
            axis.set_title(label, fontsize=9)
        for axis in axes:
            axis.axis("off")
        fig.suptitle(title, fontsize=9)
        return figure_html(fig, title)

    def class_summary(self, name, samples, maps):
        plt = _pyplot()
        mean = np.mean([np.abs(_scaled(m)) for m in maps], axis=0)
        fig, axis = plt.subplots(figsize=(2.4, 2.4))
        axis.imshow(mean, cmap="magma")
        axis.axis("off")
        axis.set_title(f"{name}: mean |attribution| ({len(maps)})", fontsize=8)
        return figure_html(fig, f"class {name} summary")


def _extent(sample) -> tuple[float, float, float, float] | None:
    coords = sample.display.get("coords") or {}
    if not coords.get("lat") or not coords.get("lon"):
        return None
    lat, lon = coords["lat"], coords["lon"]
    return (min(lon), max(lon), min(lat), max(lat))


@register_renderer("field")
class FieldRenderer(ImageRenderer):
    """Maps on the latitude-longitude grid (north up, degrees on the axes when the data name
    their grid); the class summary is the signed mean attribution over the samples explained
    for that output (e.g. every positive event), where red raises the output's score."""

    def _axes(self, axis, sample) -> None:
        if _extent(sample):
            axis.set_xlabel("longitude", fontsize=7)
            axis.set_ylabel("latitude", fontsize=7)
            axis.tick_params(labelsize=6)
        else:
            axis.axis("off")

    def sample(self, sample, maps, title):
        plt = _pyplot()
        extent = _extent(sample)
        image = sample.display["image"]
        fig, axes = plt.subplots(1, len(maps) + 1, figsize=(2.6 * (len(maps) + 1), 2.4),
                                 squeeze=False)
        axes = axes[0]
        options = {"origin": "lower", "extent": extent} if extent else {}
        axes[0].imshow(image, **options)
        axes[0].set_title("latest field", fontsize=9)
        for axis, (label, values) in zip(axes[1:], maps, strict=True):
            axis.imshow(_scaled(values), cmap="bwr", vmin=-1, vmax=1, **options)
            axis.set_title(label, fontsize=9)
        for axis in axes:
            self._axes(axis, sample)
        fig.suptitle(title, fontsize=9)
        return figure_html(fig, title)

    def class_summary(self, name, samples, maps):
        plt = _pyplot()
        extent = _extent(samples[0])
        mean = np.mean([_scaled(m) for m in maps], axis=0)
        limit = float(np.abs(mean).max()) or 1.0
        fig, axis = plt.subplots(figsize=(3.2, 2.4))
        options = {"origin": "lower", "extent": extent} if extent else {}
        shown = axis.imshow(mean, cmap="bwr", vmin=-limit, vmax=limit, **options)
        fig.colorbar(shown, ax=axis, shrink=0.8)
        self._axes(axis, samples[0])
        axis.set_title(f"{name}: mean attribution over {len(maps)}", fontsize=8)
        return figure_html(fig, f"class {name} summary")


@register_renderer("tokens")
class TokenRenderer(Renderer):
    """Tokens highlighted red (for the output) or blue (against), one row per map."""

    def sample(self, sample, maps, title):
        rows = [f"<p class='caption'>{html.escape(title)}</p>"]
        tokens = sample.display["tokens"]
        if not maps:  # a prediction drawn without attributions: the text as the model read it
            rows.append(f"<div class='tokens'>{html.escape(' '.join(tokens))}</div>")
        for label, values in maps:
            scaled = _scaled(values)
            spans = []
            for token, value in zip(tokens, scaled, strict=True):
                colour = f"rgba(220,40,40,{value:.2f})" if value >= 0 else \
                    f"rgba(40,80,220,{-value:.2f})"
                spans.append(f"<span class='tok' style='background:{colour}' "
                             f"title='{value:+.3f}'>{html.escape(token)}</span>")
            rows.append(f"<div class='tokens'><b>{html.escape(label)}</b> {' '.join(spans)}</div>")
        return "\n".join(rows)

    def class_summary(self, name, samples, maps):
        totals: dict[str, list[float]] = {}
        for sample, values in zip(samples, maps, strict=True):
            for token, value in zip(sample.display["tokens"], _scaled(values), strict=True):
                totals.setdefault(token, []).append(float(value))
        ranked = sorted(totals.items(), key=lambda kv: -np.mean(kv[1]))[:10]
        cells = "".join(f"<tr><td><code>{html.escape(t)}</td><td>{np.mean(v):+.3f}</td>"
                        f"<td>{len(v)}</td></tr>" for t, v in ranked)
        return (f"<table class='summary'><caption>{html.escape(name)}: tokens with the largest "
                f"mean attribution</caption><tr><th>token</th><th>mean</th><th>seen</th></tr>"
                f"{cells}</table>")


@register_renderer("series")
class SeriesRenderer(Renderer):
    """The context (and the future, for a forecast) over a time-step by channel strip."""

    def sample(self, sample, maps, title):
        plt = _pyplot()
        context = sample.display["context"]
        observed = sample.display["observed"]
        fig, axes = plt.subplots(len(maps) + 1, 1, figsize=(7, 1.6 + 0.5 * len(maps)),
                                 gridspec_kw={"height_ratios": [3] + [0.6] * len(maps)},
                                 sharex=True, squeeze=False)
        axes = axes[:, 0]
        steps = np.arange(len(context))
        axes[0].plot(steps, context, color="black", linewidth=1)
        if "future" in sample.display:
            future = sample.display["future"]
            axes[0].plot(np.arange(len(context), len(context) + len(future)), future,
                         color="tab:green", linewidth=1, label="future")
        axes[0].set_ylabel("scaled", fontsize=8)
        for axis, (label, values) in zip(axes[1:], maps, strict=True):
            strip = _scaled(values[torch.from_numpy(observed)])[None, :]
            axis.imshow(strip, cmap="bwr", vmin=-1, vmax=1, aspect="auto",
                        extent=(-0.5, len(context) - 0.5, 0, 1))
            axis.set_yticks([])
            axis.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
        fig.suptitle(title, fontsize=9)
        return figure_html(fig, title)

    def class_summary(self, name, samples, maps):
        plt = _pyplot()
        length = min(int(s.display["observed"].sum()) for s in samples)
        profiles = [np.abs(_scaled(m[torch.from_numpy(s.display["observed"])]))[-length:]
                    for s, m in zip(samples, maps, strict=True)]
        fig, axis = plt.subplots(figsize=(5, 1.8))
        axis.plot(np.arange(-length, 0), np.mean(profiles, axis=0), color="tab:red")
        axis.set_xlabel("steps before the end of the context", fontsize=8)
        axis.set_title(f"{name}: mean |attribution| ({len(maps)})", fontsize=8)
        return figure_html(fig, f"{name} summary")


@register_renderer("points")
class PointRenderer(Renderer):
    """The cloud from two viewpoints, coloured by each map; the class summary is the share of
    |attribution| by distance from the cloud's centre (core against extremities)."""

    VIEWS = ((20, -60), (20, 30))

    def sample(self, sample, maps, title):
        plt = _pyplot()
        points = sample.display["points"]
        # No maps (a prediction drawn without attributions): the cloud alone, in grey.
        maps = maps or [("input", torch.zeros(len(points)))]
        fig = plt.figure(figsize=(2.4 * len(self.VIEWS) * len(maps), 2.6))
        column = 0
        for label, values in maps:
            colours = _scaled(values)
            for elevation, azimuth in self.VIEWS:
                column += 1
                axis = fig.add_subplot(1, len(self.VIEWS) * len(maps), column, projection="3d")
                # The shape in grey under the map: points near zero would vanish in white.
                axis.scatter(points[:, 0], points[:, 1], points[:, 2], c="0.75", s=2,
                             depthshade=False)
                axis.scatter(points[:, 0], points[:, 1], points[:, 2], c=colours, cmap="bwr",
                             vmin=-1, vmax=1, s=4, depthshade=False)
                axis.view_init(elevation, azimuth)
                axis.set_axis_off()
                axis.set_title(label, fontsize=8)
        fig.suptitle(f"{title}: {sample.display.get('name', '')}", fontsize=9)
        return figure_html(fig, title)

    def class_summary(self, name, samples, maps):
        plt = _pyplot()
        edges = np.linspace(0, 1, 6)
        shares = []
        for sample, values in zip(samples, maps, strict=True):
            points = sample.display["points"]
            radius = np.linalg.norm(points - points.mean(axis=0), axis=1)
            radius = radius / max(float(radius.max()), 1e-9)
            weight = np.abs(values.detach().float().numpy())
            totals = np.histogram(radius, bins=edges, weights=weight)[0]
            shares.append(totals / max(float(totals.sum()), 1e-12))
        fig, axis = plt.subplots(figsize=(3.2, 1.8))
        centres = (edges[:-1] + edges[1:]) / 2
        axis.bar(centres, np.mean(shares, axis=0), width=0.18, color="tab:red")
        axis.set_xlabel("distance from centre (share of radius)", fontsize=8)
        axis.set_ylabel("share of |attr.|", fontsize=8)
        axis.set_title(f"{name}: where attribution lies ({len(maps)})", fontsize=8)
        return figure_html(fig, f"{name} summary")
