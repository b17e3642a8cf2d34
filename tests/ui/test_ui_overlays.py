"""Overlay drawing: normalised boxes and original-size heatmaps land where they should on any display size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ui.overlays import (
    ROLE_PALETTES,
    UNDECLARED_COLORS,
    UNKNOWN_COLOR,
    OverlayBox,
    OverlayHeatmap,
    SourcePalette,
    blend_heatmap,
    box_to_display,
    compose,
    display_size,
    draw_boxes,
    load_heatmap,
    source_color,
    to_display_image,
)


def test_display_size_keeps_aspect_ratio_and_never_upscales():
    assert display_size((2000, 1000), 500) == (500, 250)
    assert display_size((1000, 2000), 500) == (250, 500)
    assert display_size((300, 200), 900) == (300, 200)


def test_box_maps_to_display_pixels_on_a_non_square_image():
    box = OverlayBox("pleural_effusion", "vlm", 0.25, 0.5, 0.75, 0.9)
    # original 400 x 200 (w x h) shown at 200 x 100 and at 800 x 400: same relative place.
    assert box_to_display(box, (200, 100)) == (50, 50, 150, 90)
    assert box_to_display(box, (800, 400)) == (200, 200, 600, 360)
    # A box touching the far edges stays inside the canvas.
    edge = OverlayBox("cardiomegaly", "vlm", 0.0, 0.0, 1.0, 1.0)
    assert box_to_display(edge, (200, 100)) == (0, 0, 199, 99)


def test_drawn_box_outline_lands_on_the_expected_pixels():
    pixels = np.full((200, 400), 0.5, dtype=np.float32)  # H=200, W=400: non-square original
    box = OverlayBox("pleural_effusion", "vlm", 0.25, 0.5, 0.75, 0.9)
    img = compose(pixels, boxes=[box], max_side=200)  # display 200 x 100
    assert img.size == (200, 100)
    arr = np.asarray(img)
    colour = np.array(source_color("vlm"))
    # Bottom edge y=90 and right edge x=150, away from the label at the top-left corner.
    assert np.abs(arr[90, 100].astype(int) - colour).max() <= 2
    assert np.abs(arr[70, 150].astype(int) - colour).max() <= 2
    # Inside and outside the box the radiograph is untouched (mid grey).
    assert np.abs(arr[75, 100].astype(int) - 128).max() <= 2
    assert np.abs(arr[20, 20].astype(int) - 128).max() <= 2
    assert np.abs(arr[95, 190].astype(int) - 128).max() <= 2


def test_sources_get_distinct_stable_colours():
    assert source_color("vlm") != source_color("classifier")
    assert source_color("my_tool") == source_color("my_tool")


def test_heatmap_blends_only_where_it_is_hot_in_original_coordinates():
    pixels = np.full((100, 300), 0.2, dtype=np.float32)  # H=100, W=300
    heat = np.zeros((100, 300), dtype=np.float32)
    heat[50:, 200:] = 1.0  # hot: bottom-right block of the ORIGINAL image
    base = to_display_image(pixels, (150, 50))
    out = np.asarray(blend_heatmap(base, heat, alpha=0.6)).astype(int)
    ref = np.asarray(base).astype(int)
    assert np.abs(out[40, 130] - ref[40, 130]).max() > 40  # display (x=130, y=40) is in the hot block
    assert np.abs(out[10, 20] - ref[10, 20]).max() == 0  # cold region unchanged


def test_flat_heatmap_changes_nothing():
    base = to_display_image(np.full((20, 30), 0.5, dtype=np.float32))
    out = blend_heatmap(base, np.ones((20, 30), dtype=np.float32))
    assert np.array_equal(np.asarray(out), np.asarray(base))


def test_draw_boxes_leaves_the_input_image_alone():
    img = Image.new("RGB", (60, 40), (10, 10, 10))
    before = np.asarray(img).copy()
    draw_boxes(img, [OverlayBox("nodule", "classifier", 0.1, 0.1, 0.9, 0.9)])
    assert np.array_equal(np.asarray(img), before)


def test_overlay_items_from_reply_payload(tmp_path):
    b = OverlayBox.from_any({"finding": "nodule", "source": "vlm", "x1": 0.1, "y1": 0.2, "x2": 0.3, "y2": 0.4, "label": "n"})
    assert b is not None and (b.x1, b.y2, b.source) == (0.1, 0.4, "vlm")
    assert OverlayBox.from_any({"finding": "nodule", "x1": 0.5, "y1": 0.2, "x2": 0.3, "y2": 0.4}) is None  # out of order
    assert OverlayBox.from_any({"finding": "nodule"}) is None
    path = tmp_path / "h.npy"
    np.save(path, np.random.default_rng(0).random((8, 8)).astype(np.float32))
    h = OverlayHeatmap.from_any({"finding": "edema", "uri": str(path)})
    assert h is not None and load_heatmap(h.uri).shape == (8, 8)
    assert load_heatmap(str(tmp_path / "missing.npy")) is None


@pytest.mark.parametrize("shape", [(1, 10, 12), (10, 12, 1)])
def test_heatmap_with_singleton_axis_is_accepted(shape):
    base = to_display_image(np.zeros((10, 12), dtype=np.float32))
    heat = np.zeros(shape, dtype=np.float32)
    heat.flat[0] = 1.0
    assert blend_heatmap(base, heat).size == (12, 10)


class _Tool:
    """A custom tool that only declares capabilities (never run here)."""

    def __init__(self, name: str, *, writes_report: bool = False, image_source: bool = False):
        self.name, self.intents = name, frozenset({"report"})
        self.writes_report, self.image_source = writes_report, image_source

    def run(self, request):  # pragma: no cover - the palette never runs a tool
        raise AssertionError("not run")


def _palette(graph) -> SourcePalette:
    """The palette the app draws with: from the roles a turn record of ``graph`` carries."""
    out = graph.invoke({"messages": [("user", "hello")]}, {"configurable": {"thread_id": "palette"}})
    return SourcePalette.from_roles(out["record"].roles)


def test_box_colour_follows_the_declared_role_not_the_name(make_graph):
    """Custom tools take their role's colours from their declared capabilities: a lone custom report
    writer is drawn like the built-in VLM; several sources of one role get distinct, stable colours."""
    alone = _palette(make_graph(_Tool("scribe", writes_report=True, image_source=True)))
    assert alone.color("scribe") == ROLE_PALETTES["writer"][0] == (0, 200, 255)  # today's VLM colour

    tools = [_Tool("scribe", writes_report=True, image_source=True), _Tool("densenet2", image_source=True),
             _Tool("vit", image_source=True), _Tool("atlas")]
    graph = make_graph(*tools, builtin=True)
    palette = _palette(graph)
    # The built-ins look as they always have.
    assert (palette.color("vlm"), palette.color("classifier"), palette.color("retrieval")) == (
        (0, 200, 255), (255, 140, 0), (170, 110, 255))
    # The custom writer is in the writer palette, distinct from the VLM.
    assert palette.color("scribe") in ROLE_PALETTES["writer"] and palette.color("scribe") != palette.color("vlm")
    # Two custom image sources: image-source colours, distinct from each other and from the classifier.
    image = [palette.color(n) for n in ("classifier", "densenet2", "vit")]
    assert all(c in ROLE_PALETTES["image"] for c in image) and len(set(image)) == 3
    assert palette.color("atlas") in ROLE_PALETTES["prior"] and palette.color("atlas") != palette.color("retrieval")
    assert _palette(graph) == palette  # stable across reruns

    # The drawing uses the palette: a custom image source's outline is its palette colour.
    box = OverlayBox("pleural_effusion", "densenet2", 0.25, 0.5, 0.75, 0.9)
    arr = np.asarray(compose(np.full((200, 400), 0.5, dtype=np.float32), boxes=[box], max_side=200, palette=palette))
    assert np.abs(arr[90, 100].astype(int) - np.array(palette.color("densenet2"))).max() <= 2


def test_unknown_capabilities_fall_back_to_the_builtins_and_a_missing_source_is_unknown():
    fallback = SourcePalette.from_roles(None)  # no turn record yet: the built-ins' roles
    assert fallback.color("vlm") == (0, 200, 255) and fallback.color("classifier") == (255, 140, 0)
    assert fallback.color("my_tool") in UNDECLARED_COLORS and fallback.color("my_tool") == source_color("my_tool")
    assert all(fallback.color("my_tool") not in p for p in ROLE_PALETTES.values())

    b = OverlayBox.from_any({"finding": "nodule", "x1": 0.1, "y1": 0.2, "x2": 0.3, "y2": 0.4})
    assert b is not None and b.source == "" and b.key == "Nodule (unknown source)" and b.caption == "Nodule [unknown source]"
    assert fallback.color(b.source) == UNKNOWN_COLOR
    assert all(UNKNOWN_COLOR not in p for p in ROLE_PALETTES.values())
    h = OverlayHeatmap.from_any({"finding": "edema", "uri": "/h.npy"})
    assert h is not None and h.key == "Edema (unknown source)"


def test_a_label_near_the_image_edge_stays_on_the_image():
    from ui.overlays import label_origin

    assert label_origin((120, 14), (40, 50), (900, 900)) == (40, 50)  # room: at the box's corner
    x, y = label_origin((120, 14), (880, 893), (900, 900))  # a box in the bottom-right corner
    assert x + 120 <= 900 - 3 and y + 14 <= 900 - 3 and x >= 3 and y >= 3
    assert label_origin((2000, 14), (10, 10), (900, 900))[0] == 3  # wider than the image: starts at its edge
