"""Parsing RadVLM-style answers: boxes (one, several, none, malformed, outside 0-1) and yes/no."""

from __future__ import annotations

import pytest

from knowledge.evidence import Status
from tools.vlm.geometry import ModelView
from tools.vlm.parsing import format_box, parse_boxes, parse_yes_no


def test_one_box_in_a_sentence() -> None:
    p = parse_boxes("The left lower lobe opacity is located at [0.55, 0.60, 0.85, 0.90].", label="opacity")
    assert len(p.boxes) == 1
    b = p.boxes[0]
    assert (b.x1, b.y1, b.x2, b.y2) == (0.55, 0.60, 0.85, 0.90)
    assert b.label == "opacity"
    assert p.rejected == []


def test_several_boxes_in_one_answer() -> None:
    text = ("Bilateral pleural effusions are seen at [0.05, 0.55, 0.35, 0.95], [0.62, 0.58, 0.96, 0.93] "
            "and [0.40, 0.10, 0.60, 0.30].")
    p = parse_boxes(text)
    assert [(b.x1, b.y1, b.x2, b.y2) for b in p.boxes] == [
        (0.05, 0.55, 0.35, 0.95), (0.62, 0.58, 0.96, 0.93), (0.40, 0.10, 0.60, 0.30)]


def test_no_box() -> None:
    p = parse_boxes("There is no evidence of pneumothorax.")
    assert p.boxes == [] and p.rejected == []
    assert parse_boxes("").boxes == [] and parse_boxes(None).boxes == []


@pytest.mark.parametrize("chunk", ["[0.1, 0.2, 0.3]", "[0.1, 0.2, abc, 0.4]", "[0.1,, 0.2, 0.3, 0.4]",
                                   "[0.1, 0.2, 0.3, 0.4, 0.5]", "[0.1 0.2 0.3 0.4]"])
def test_malformed_numbers_are_not_boxes(chunk: str) -> None:
    p = parse_boxes(f"Opacity at {chunk} and a real one at [0.20, 0.30, 0.40, 0.50].")
    assert [(b.x1, b.y1, b.x2, b.y2) for b in p.boxes] == [(0.20, 0.30, 0.40, 0.50)]
    assert len(p.rejected) == 1 and chunk in p.rejected[0]


def test_slightly_outside_is_clipped_far_outside_is_rejected() -> None:
    p = parse_boxes("At [-0.02, 0.10, 1.03, 0.50].")
    assert [(b.x1, b.y1, b.x2, b.y2) for b in p.boxes] == [(0.0, 0.10, 1.0, 0.50)]
    p = parse_boxes("At [0.10, 0.20, 1.70, 0.50] and at [120, 80, 300, 240].")
    assert p.boxes == []
    assert len(p.rejected) == 2 and all("outside 0-1" in r for r in p.rejected)


def test_swapped_corners_are_ordered_and_empty_boxes_rejected() -> None:
    p = parse_boxes("At [0.80, 0.90, 0.20, 0.30].")
    assert [(b.x1, b.y1, b.x2, b.y2) for b in p.boxes] == [(0.20, 0.30, 0.80, 0.90)]
    p = parse_boxes("At [0.40, 0.30, 0.40, 0.60].")
    assert p.boxes == [] and "empty" in p.rejected[0]


def test_boxes_are_mapped_through_the_padding() -> None:
    # 200x100 content padded to a 200x200 square (50 px above and below).
    view = ModelView((400, 200), 200, 100, 200, 200, 0, 50)
    p = parse_boxes("Effusion at [0.50, 0.25, 1.00, 0.75].", view)
    b = p.boxes[0]
    assert (b.x1, b.y1, b.x2, b.y2) == pytest.approx((0.5, 0.0, 1.0, 1.0))
    # A box entirely inside the padding is no box on the image.
    assert parse_boxes("At [0.10, 0.00, 0.30, 0.20].", view).boxes == []


def test_format_box_roundtrip() -> None:
    assert format_box((0.123, 0.5, 0.9, 1.0)) == "[0.12, 0.50, 0.90, 1.00]"


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("Yes.", Status.present),
        ("Yes, there is a right-sided pleural effusion.", Status.present),
        ("No.", Status.absent),
        ("No, there is no pneumothorax.", Status.absent),
        ("There is no evidence of consolidation.", Status.absent),
        ("A small left pleural effusion is present.", Status.present),
        ("Yes, possibly a small effusion.", Status.uncertain),
        ("No definite pneumothorax, although a small one cannot be excluded.", Status.uncertain),
        ("It may represent atelectasis.", Status.uncertain),
        ("", Status.uncertain),
        ("Hmm.", Status.uncertain),
        ("Nodule", Status.uncertain),
    ],
)
def test_yes_no(text: str, status: Status) -> None:
    assert parse_yes_no(text) is status
