"""Heatmaps land on the ORIGINAL image: crop offset and scale are undone, unseen margins stay cold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from classifier_helpers import BrightnessNet, blob_study, wrapped

from cxr_agent.settings import Settings
from knowledge.evidence import Status
from tools.base import ToolRequest
from tools.classifier.heatmap import CropGeometry
from tools.classifier.tool import ClassifierTool, preprocess


@pytest.fixture()
def bright_tool(tmp_path) -> ClassifierTool:
    settings = Settings(model_profile="tiny", data_dir=tmp_path)
    thr = [0.01] * 18  # every finding present, so report heatmaps exist too
    return ClassifierTool(settings, model=wrapped(BrightnessNet(), op_threshs=thr))


# (width, height, blob (x1,y1,x2,y2), decoy outside the centre crop)
CASES = [
    (300, 200, (150, 40, 190, 80), (0, 0, 40, 200)),  # wide: crop x0 = 50, decoy in the left margin
    (200, 320, (30, 150, 90, 200), (0, 280, 200, 320)),  # tall: crop y0 = 60, decoy in the bottom margin
    (1000, 600, (700, 100, 780, 180), (0, 0, 150, 600)),  # downscale 600 -> 224
]


@pytest.mark.parametrize(("width", "height", "blob", "decoy"), CASES)
def test_heatmap_box_maps_back_through_crop_and_resize(bright_tool, width, height, blob, decoy):
    study = blob_study(width, height, blob, decoy)
    hm = bright_tool.heatmap(study, "pleural_effusion")
    assert hm.array.shape == (height, width)
    assert hm.array.dtype == np.float32 and 0.0 <= hm.array.min() and hm.array.max() <= 1.0
    # the decoy is brighter but outside the crop: the model never saw it, so it gets no heat
    dx1, dy1, dx2, dy2 = decoy
    assert float(hm.array[dy1:dy2, dx1:dx2].max()) == 0.0
    # the peak is on the blob, and the box surrounds the blob in original-image coordinates
    py, px = np.unravel_index(int(np.argmax(hm.array)), hm.array.shape)
    x1, y1, x2, y2 = blob
    assert x1 - 4 <= px < x2 + 4 and y1 - 4 <= py < y2 + 4
    expected = (x1 / width, y1 / height, x2 / width, y2 / height)
    got = (hm.box.x1, hm.box.y1, hm.box.x2, hm.box.y2)
    # 0.01 of a side: a pixel or two (one feature cell is 4 model pixels); forgetting the
    # crop offset or the scale moves the box by 0.1-0.3
    assert got == pytest.approx(expected, abs=0.01), (got, expected)
    # saved next to the study's other artifacts, reduced (uint8, longest side <= 512, same aspect),
    # and still in place: stretched over the original image it matches the full-size map
    saved = np.load(hm.path)
    scale = min(1.0, 512 / max(width, height))
    assert saved.dtype == np.uint8 and saved.shape == (round(height * scale), round(width * scale))
    from PIL import Image

    back = np.asarray(Image.fromarray(saved.astype(np.float32) / 255, mode="F").resize((width, height)))
    assert float(np.abs(back - hm.array).mean()) < 0.02
    py2, px2 = np.unravel_index(int(np.argmax(back)), back.shape)
    assert x1 - 8 <= px2 < x2 + 8 and y1 - 8 <= py2 < y2 + 8  # the overlay's peak is on the blob
    assert float(back[dy1:dy2, dx1:dx2].max()) < 0.05  # and the unseen decoy stays cold
    assert Path(hm.path).parent.name == study.id


def test_crop_geometry_is_xrv_centre_crop():
    import torchxrayvision as xrv

    for w, h in [(300, 200), (200, 321), (257, 256), (224, 224)]:
        g = CropGeometry.centre_crop(w, h, 224)
        img = np.arange(w * h, dtype=np.float32).reshape(1, h, w)
        ref = xrv.datasets.XRayCenterCrop()(img)
        assert np.array_equal(ref[0], img[0, g.y0 : g.y0 + g.size, g.x0 : g.x0 + g.size])
        assert g.to_original(0, 0) == (g.x0, g.y0)
        assert g.to_original(224, 224) == pytest.approx((g.x0 + g.size, g.y0 + g.size))


def test_preprocess_matches_xrv_pipeline(real_study):
    """normalize -> XRayCenterCrop -> XRayResizer (skimage) vs ours (torch antialiased bilinear)."""
    import torchxrayvision as xrv

    ref = xrv.utils.normalize(real_study.pixels, 1.0)[None]
    ref = xrv.datasets.XRayResizer(224)(xrv.datasets.XRayCenterCrop()(ref))
    ours, geom = preprocess(real_study, 224)
    ours = ours.numpy()
    assert ours.shape == ref.shape == (1, 224, 224)
    assert -1024.0 <= ours.min() and ours.max() <= 1024.0
    diff = np.abs(ours - ref)
    assert float(diff.mean()) < 5.0  # of a 2048-wide range
    assert float(np.corrcoef(ours.ravel(), ref.ravel())[0, 1]) > 0.999


def test_locate_attaches_box_and_artifact_for_the_requested_finding(bright_tool):
    study = blob_study(300, 200, (150, 40, 190, 80), (0, 0, 40, 200))
    ev = bright_tool.run(ToolRequest(intent="locate", study=study, finding="cardiomegaly"))
    assert ev.ok, ev.error
    assert [a.finding for a in ev.artifacts] == ["cardiomegaly"]
    art = ev.artifacts[0]
    assert art.kind == "heatmap" and Path(art.uri).exists() and art.box is not None
    call = next(c for c in ev.calls if c.finding == "cardiomegaly")
    assert call.box == art.box
    assert all(c.box is None for c in ev.calls if c.finding != "cardiomegaly")
    assert ev.meta["focus"] == "cardiomegaly"


def test_report_heatmaps_capped_to_top_present(bright_tool):
    study = blob_study(300, 200, (150, 40, 190, 80))
    ev = bright_tool.run(ToolRequest(intent="report", study=study))
    assert ev.ok, ev.error
    present = sorted((c for c in ev.calls if c.status is Status.present), key=lambda c: -c.score)
    assert len(present) == 18
    assert [a.finding for a in ev.artifacts] == [c.finding for c in present[:3]]


def test_untrained_finding_gets_no_heatmap_but_calls_still_return(tmp_path):
    import math

    thr = [0.5] * 14 + [math.nan] * 4
    tool = ClassifierTool(Settings(model_profile="tiny", data_dir=tmp_path), model=wrapped(BrightnessNet(), op_threshs=thr))
    study = blob_study(120, 100, (10, 10, 50, 50))
    ev = tool.run(ToolRequest(intent="finding_question", study=study, finding="fracture"))
    assert ev.ok and ev.artifacts == [] and len(ev.calls) == 14
    assert "not trained on Fracture" in " ".join(ev.meta["notes"])
    with pytest.raises(ValueError, match="not trained"):
        tool.heatmap(study, "fracture")
