"""The image the model sees and the coordinate round trip original -> model -> parsed back."""

from __future__ import annotations

import numpy as np
import pytest

from knowledge.evidence import Box
from tools.vlm.geometry import prepare_image
from tools.vlm.parsing import format_box, parse_boxes


def _pixels(w: int, h: int) -> np.ndarray:
    return np.linspace(0, 1, w * h, dtype=np.float32).reshape(h, w)


def test_model_image_is_8bit_rgb_downscaled_with_aspect_kept() -> None:
    mi = prepare_image(_pixels(2000, 1500), max_side=1024)
    assert mi.image.mode == "RGB" and mi.image.size == (1024, 768)
    assert mi.view.original_size == (2000, 1500) and not mi.view.padded
    arr = np.asarray(mi.image)
    assert arr.dtype == np.uint8 and arr.min() <= 1 and arr.max() >= 254
    assert (arr[..., 0] == arr[..., 2]).all()  # grey in all three channels


def test_small_image_is_not_upscaled() -> None:
    mi = prepare_image(_pixels(300, 200), max_side=1024)
    assert mi.image.size == (300, 200)


@pytest.mark.parametrize("pad", [False, True])
@pytest.mark.parametrize("size", [(2000, 1500), (700, 1100), (512, 512), (333, 97)])
def test_box_round_trip_through_preprocessing(size: tuple[int, int], pad: bool) -> None:
    mi = prepare_image(_pixels(*size), max_side=512, pad_square=pad)
    if pad:
        assert mi.image.size[0] == mi.image.size[1]
    original = Box(x1=0.12, y1=0.31, x2=0.58, y2=0.87)
    model_coords = mi.view.to_model((original.x1, original.y1, original.x2, original.y2))
    answer = f"The opacity is located at {format_box(model_coords)}."  # as RadVLM writes it: 2 decimals
    parsed = parse_boxes(answer, mi.view)
    assert len(parsed.boxes) == 1
    back = parsed.boxes[0]
    # 2-decimal rounding in model space, stretched by canvas/content when padded.
    tol = 0.005 * max(mi.view.canvas_w / mi.view.content_w, mi.view.canvas_h / mi.view.content_h) + 1e-6
    assert back.x1 == pytest.approx(original.x1, abs=tol)
    assert back.y1 == pytest.approx(original.y1, abs=tol)
    assert back.x2 == pytest.approx(original.x2, abs=tol)
    assert back.y2 == pytest.approx(original.y2, abs=tol)
    # The same box drawn on the original pixels lands where it started.
    assert back.to_pixels(*size)[0] == pytest.approx(round(0.12 * size[0]), abs=tol * size[0] + 1)


def test_padding_is_undone() -> None:
    mi = prepare_image(_pixels(400, 200), max_side=1024, pad_square=True)
    assert mi.image.size == (400, 400) and mi.view.pad_top == 100 and mi.view.pad_left == 0
    # The model's full-width band across the middle half is the whole original image.
    assert mi.view.to_original((0.0, 0.25, 1.0, 0.75)) == pytest.approx((0.0, 0.0, 1.0, 1.0))
    assert np.asarray(mi.image)[:100].max() == 0  # the padding is black
