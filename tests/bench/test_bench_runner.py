"""bench/__main__.py: discovery, failing modules become rows, one JSON summary with machine info."""

from __future__ import annotations

import json
import sys

import pytest

import bench.__main__ as runner

GOOD = '''
def run(quick=False):
    return [{"benchmark": "good", "metric": "speedup", "value": 2.0, "unit": "x", "baseline": 1.0,
             "ratio": 2.0, "target": ">= 1.5x", "note": "quick" if quick else "full"},
            {"metric": "latency", "value": 5.0, "unit": "ms", "baseline": None, "ratio": None,
             "target": "<= 2 ms", "note": ""}]
'''


@pytest.fixture()
def fake_bench(tmp_path, monkeypatch):
    pkg = tmp_path / "fakebench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text(GOOD)
    (pkg / "broken.py").write_text("def run(quick=False):\n    raise RuntimeError('no weights here')\n")
    (pkg / "norun.py").write_text("X = 1\n")
    (pkg / "badimport.py").write_text("import does_not_exist_anywhere\n")
    (pkg / "exits.py").write_text("import sys\ndef run(quick=False):\n    sys.exit(3)\n")
    (pkg / "strings.py").write_text("def run(quick=False):\n    return ['not a dict']\n")
    (pkg / "_private.py").write_text("raise SystemExit('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for name in [m for m in sys.modules if m == "fakebench" or m.startswith("fakebench.")]:
        del sys.modules[name]


def test_discover_skips_private(fake_bench):
    assert runner.discover(fake_bench) == ["badimport", "broken", "exits", "good", "norun", "strings"]
    assert "reconciler_sim" in runner.discover()


def test_main_turns_failures_into_rows(fake_bench, tmp_path, capsys):
    out = tmp_path / "summary.json"
    rc = runner.main(["--quick", "--out", str(out)], package_dir=fake_bench, package="fakebench")
    assert rc == 1  # an ERROR row makes the exit status non-zero, after everything ran
    payload = json.loads(out.read_text())
    rows = payload["rows"]
    by = {}
    for r in rows:
        by.setdefault(r["benchmark"], []).append(r)
    assert [r["metric"] for r in by["good"]] == ["speedup", "latency"]
    assert by["good"][0]["note"] == "quick" and by["good"][0]["met"] == "yes"
    assert by["good"][1]["met"] == "NO"  # 5 ms against <= 2 ms
    for name, needle in (("broken", "no weights here"), ("norun", "no run"), ("badimport", "does_not_exist"),
                         ("exits", "SystemExit"), ("strings", "not dicts")):
        assert by[name][0]["metric"] == "ERROR" and needle in by[name][0]["note"], (name, by[name])
    assert {"cpus", "torch", "cuda", "git_commit"} <= set(payload["machine"])
    assert payload["quick"] is True and set(payload["module_seconds"]) == set(by)
    printed = capsys.readouterr().out
    assert "cxr-agent benchmarks" in printed and "ERROR" in printed


def test_only_and_missing_module(fake_bench, tmp_path):
    out = tmp_path / "s.json"
    rc = runner.main(["--only", "good", "--only", "nope", "--out", str(out)], package_dir=fake_bench, package="fakebench")
    rows = json.loads(out.read_text())["rows"]
    assert rc == 1 and [r["benchmark"] for r in rows] == ["good", "good", "nope"]
    assert rows[0]["note"] == "full" and rows[2]["metric"] == "ERROR"


def test_met_rules():
    assert runner.met({"value": 0.9, "target": ">= 0.8"}) == "yes"
    assert runner.met({"value": 3.0, "ratio": 0.9, "target": ">= 1x"}) == "NO"
    assert runner.met({"value": "fast", "target": ">= 1"}) == ""
    assert runner.met({"value": 1.0, "target": "about 1"}) == ""
    assert runner.met({"value": None, "target": ">= 1"}) == ""
