"""The example custom tool: its measurements, and both ways of plugging it into the graph."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from examples.image_quality import ImageQualityTool, measure
from tools.base import ToolRequest
from tools.ingestion.study import Study


def _chest(w: int = 1200, h: int = 1200, spine_at: float = 0.5) -> np.ndarray:
    """A crude synthetic frontal film: grey body, darker lungs, a bright vertical band (spine)."""
    x = np.linspace(0, 1, w)[None, :]
    img = np.full((h, w), 0.55, dtype=np.float32)
    lungs = (np.abs(np.abs(x - spine_at) - 0.22) < 0.12).repeat(h, axis=0)
    img[lungs] = 0.25
    img += 0.45 * np.exp(-((x - spine_at) ** 2) / (2 * 0.03**2)).astype(np.float32)
    rng = np.random.default_rng(0)
    return np.clip(img + rng.normal(0, 0.05, img.shape).astype(np.float32), 0, 1)


def _run(pixels: np.ndarray, view: str = "PA"):
    return ImageQualityTool().run(ToolRequest(intent="report", study=Study.from_array(pixels, view=view)))


def test_good_synthetic_film_has_no_flags():
    ev = _run(_chest())
    assert ev.ok and ev.meta["flags"] == []
    assert ev.answer.startswith("Technical quality adequate")
    assert abs(ev.meta["metrics"]["midline_offset"]) < 0.03
    assert ev.calls == []  # never a pathology call


def test_clipped_film_is_flagged():
    img = _chest()
    img[:, : img.shape[1] // 2] = 0.0  # half burned out
    ev = _run(img)
    assert any("pure black" in f for f in ev.meta["flags"])


def test_low_contrast_and_low_resolution():
    img = 0.5 + 0.05 * (_chest(600, 600) - 0.5)
    ev = _run(img.astype(np.float32))
    flags = " ".join(ev.meta["flags"])
    assert "low contrast" in flags and "low resolution (600 px" in flags


def test_off_centre_mediastinum_is_flagged():
    ev = _run(_chest(spine_at=0.62))
    m = measure(_chest(spine_at=0.62))
    assert m.midline_offset == pytest.approx(0.12, abs=0.02)
    assert any("toward the image right" in f for f in ev.meta["flags"])


def test_lateral_view_skips_centring_and_no_study_fails():
    ev = _run(_chest(spine_at=0.7), view="LATERAL")
    assert ev.meta["metrics"]["midline_offset"] is None and "centring not assessed" in ev.answer
    assert not ImageQualityTool().run(ToolRequest(intent="report")).ok


def test_real_radiograph(shared_data: Path):
    from tools.ingestion.loader import load_study

    img = sorted((shared_data / "nih_cxr14" / "images").glob("*.png"))[0]
    study = load_study(img)
    ev = ImageQualityTool().run(ToolRequest(intent="report", study=study))
    assert ev.ok and ev.meta["metrics"]["short_side"] == 1024
    assert 0.0 <= ev.meta["metrics"]["contrast"] <= 1.0


def _graph(settings, **kw):
    from graph import build_graph

    return build_graph(settings, builtin_tools=False, checkpointer=False, **kw)


@pytest.fixture
def settings(tmp_path):
    from cxr_agent.settings import Settings

    return Settings(model_profile="tiny", data_dir=tmp_path, checkpointer_url="memory")


def test_plugged_in_through_build_graph(settings, shared_data):
    img = sorted((shared_data / "nih_cxr14" / "images").glob("*.png"))[0]
    g = _graph(settings, tools=[ImageQualityTool()], plugins=False)
    out = g.invoke({"messages": [("user", "Write a report")], "image": str(img)})
    ev = next(e for e in out["evidence"] if e.tool == "image_quality")
    assert ev.ok
    assert f"**image_quality**: {ev.answer}" in out["messages"][-1].content


def test_plugged_in_through_entry_point(settings, tmp_path, monkeypatch, caplog):
    dist = tmp_path / "site" / "cxr_quality_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cxr-quality-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[cxr_agent.tools]\n"
        "image_quality = examples.image_quality:ImageQualityTool\n"
        "broken = cxr_no_such_module_xyz:Tool\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    from graph import runtime
    from tools.registry import load_entry_point_tools

    settings = settings.model_copy(update={"plugins": "image_quality,broken"})  # entry points run code: allow-list
    with caplog.at_level(logging.WARNING, logger="tools.registry"):
        tools = load_entry_point_tools(settings=settings)
        g = _graph(settings, plugins=True)
    assert [t.name for t in tools] == ["image_quality"]
    assert "skipping custom tool entry point 'broken'" in caplog.text
    assert "image_quality" in runtime(g).tools
    assert sys.modules.get("cxr_no_such_module_xyz") is None
