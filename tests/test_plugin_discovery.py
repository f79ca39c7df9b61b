"""Discovery reads light metadata only, and a broken plugin never takes the others down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import install_fake_dist


def _domains_json(extra_path: Path | None = None) -> dict:
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    code = textwrap.dedent("""
        import io, json, sys, contextlib
        from adaptlab.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = main(["domains", "--json"])
        heavy = sorted(m for m in ("torch", "timm", "peft", "transformers") if m in sys.modules)
        print(json.dumps({"status": status, "payload": json.loads(out.getvalue()),
                          "heavy": heavy}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_domains_lists_wildlife_without_importing_torch():
    result = _domains_json()
    assert result["status"] == 0
    assert result["heavy"] == []
    names = [d["name"] for d in result["payload"]["domains"]]
    assert "wildlife" in names
    wildlife = next(d for d in result["payload"]["domains"] if d["name"] == "wildlife")
    assert set(wildlife) == {"name", "title", "description", "tasks", "datasets", "backbones"}
    assert "efficientnet_lite0" in wildlife["backbones"]
    assert {"full", "head", "freeze", "lora"} <= set(result["payload"]["strategies"])


def test_broken_plugins_are_reported_and_skipped(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    install_fake_dist(site, "brokenimport", "brokenimport_plugin",
                       "raise ImportError('needs the missing package frobnicate')\n",
                       "brokenimport_plugin:DOMAIN")
    install_fake_dist(site, "badmeta", "badmeta_plugin", """
        from adaptlab.plugins.spec import BackboneSpec, DatasetSpec, DomainSpec
        DOMAIN = DomainSpec(
            name="badmeta", title="Bad", description="default dataset is not declared",
            tasks=("classification",),
            datasets=(DatasetSpec("a", "classification", "d", "x:y"),),
            backbones=(BackboneSpec("b", "d", "x:y", "local-file", 1.0, (3, 8, 8)),),
            default_dataset="missing", default_backbone="b")
    """, "badmeta_plugin:DOMAIN")
    install_fake_dist(site, "notaspec", "notaspec_plugin", "DOMAIN = {'name': 'x'}\n",
                       "notaspec_plugin:DOMAIN")

    result = _domains_json(site)
    errors = {e["plugin"]: e["error"] for e in result["payload"]["errors"]}
    assert "frobnicate" in errors["brokenimport"]
    assert "default_dataset 'missing'" in errors["badmeta"]
    assert "expected a DomainSpec" in errors["notaspec"]
    names = [d["name"] for d in result["payload"]["domains"]]
    assert "wildlife" in names and not {"brokenimport", "badmeta", "notaspec"} & set(names)
    assert result["heavy"] == []


def test_discovery_reads_entry_points_once_until_cleared(monkeypatch, fresh_discovery):
    from adaptlab.plugins import registry

    calls = []
    real = registry.entry_points

    def counting(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(registry, "entry_points", counting)
    first = registry.discover_domains()
    first.domains.clear()  # a caller's copy: changing it leaves the cache alone
    again = registry.get_domain("wildlife")
    assert len(calls) == 1 and again.name == "wildlife"
    registry.clear_discovery_cache()
    assert "wildlife" in registry.discover_domains().domains and len(calls) == 2
