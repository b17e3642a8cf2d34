"""Example custom tool: a technical image-quality check of a frontal chest radiograph.

Plug it in with ``build_graph(tools=[ImageQualityTool()])`` or an entry point::

    [project.entry-points."cxr_agent.tools"]
    image_quality = "examples.image_quality:ImageQualityTool"

An entry point runs third-party code, so it loads only when allow-listed:
``CXR_AGENT_PLUGINS=image_quality``. Its class attributes declare how the graph uses it
(tools.base.ToolCapabilities): it serves the report intent and declares none of the four
capabilities (not an image source, not a report writer, no draft needed, no re-asks).

What it measures (on the display pixels, bright = dense, in [0, 1]):
- exposure: the share of the central field clipped to pure black (burned out, over-exposed or
  over-windowed) or pure white (saturated);
- contrast: the 1st-99th percentile spread of the central field;
- mediastinal centring: the horizontal offset of the brightest vertical band (spine and
  mediastinum) from the image centre, a rough proxy for rotation or off-centre positioning;
- resolution: pixels on the short side.

Limits, honestly: these are heuristics on intensities, not an anatomical model. Collimation,
burned-in labels, scoliosis, a large effusion or mediastinal shift, and post-processing all move
them; the centring proxy does not separate rotation from positioning or from real pathology, and
lateral views are not assessed for centring. It adds a plain-language note to the reply and never
makes a pathology call (it is not an image source for reconciliation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from knowledge.evidence import Evidence
from tools.base import ToolRequest

CLIP_DARK = 0.02  # pixel values at or below: pure black
CLIP_BRIGHT = 0.98
CLIPPED_MAX = 0.10  # above this share of the central field clipped -> exposure flag
CONTRAST_MIN = 0.35  # p99 - p1 below this -> low contrast
OFFSET_MAX = 0.08  # mediastinal band more than 8 % of the width from the centre -> centring flag
SHORT_SIDE_MIN = 1000  # px; typical digital CXR is 2000-3000 px


@dataclass
class QualityMetrics:
    dark_clipped: float
    bright_clipped: float
    contrast: float
    midline_offset: float | None  # signed, fraction of width (+ = toward image right)
    short_side: int

    def flags(self) -> list[str]:
        out = []
        if self.dark_clipped > CLIPPED_MAX:
            out.append(f"{self.dark_clipped:.0%} of the central field is pure black (over-exposed or over-windowed)")
        if self.bright_clipped > CLIPPED_MAX:
            out.append(f"{self.bright_clipped:.0%} of the central field is saturated white (under-exposed or over-windowed)")
        if self.contrast < CONTRAST_MIN:
            out.append(f"low contrast (1st-99th percentile spread {self.contrast:.2f})")
        if self.midline_offset is not None and abs(self.midline_offset) > OFFSET_MAX:
            side = "image right" if self.midline_offset > 0 else "image left"
            out.append(f"the mediastinal band sits {abs(self.midline_offset):.0%} of the width toward the {side}: "
                       "possible rotation or off-centre positioning")
        if self.short_side < SHORT_SIDE_MIN:
            out.append(f"low resolution ({self.short_side} px on the short side; fine detail may be lost)")
        return out


def measure(pixels: np.ndarray, *, lateral: bool = False) -> QualityMetrics:
    """Quality metrics of a display-ready greyscale image (2-D, [0, 1], bright = dense)."""
    img = np.asarray(pixels, dtype=np.float32)
    h, w = img.shape
    centre = img[int(h * 0.1) : int(h * 0.9), int(w * 0.1) : int(w * 0.9)]
    p1, p99 = np.percentile(centre, [1, 99])
    offset = None
    if not lateral:
        band = img[int(h * 0.2) : int(h * 0.8), int(w * 0.25) : int(w * 0.75)]
        profile = band.mean(axis=0)
        k = max(3, band.shape[1] // 20)
        smooth = np.convolve(profile, np.ones(k) / k, mode="same")
        edge = k // 2 + 1  # 'same' convolution is biased at the borders
        peak = int(np.argmax(smooth[edge:-edge])) + edge
        offset = (int(w * 0.25) + peak) / w - 0.5
    return QualityMetrics(
        dark_clipped=float((centre <= CLIP_DARK).mean()),
        bright_clipped=float((centre >= CLIP_BRIGHT).mean()),
        contrast=float(p99 - p1),
        midline_offset=None if offset is None else float(offset),
        short_side=int(min(h, w)),
    )


class ImageQualityTool:
    """Technical quality of the study (exposure, contrast, centring, resolution); no pathology calls."""

    name = "image_quality"
    intents = frozenset({"report"})
    image_source = False  # adds a note, never a vote on findings
    writes_report = False  # its answer is a note, not a report (not labelled, its silence means nothing)
    needs_draft = False
    verifies = False

    def __init__(self, settings=None):
        self.settings = settings

    def run(self, request: ToolRequest) -> Evidence:
        t0 = time.perf_counter()
        study = request.study
        if study is None:
            return Evidence.failure(self.name, "no study loaded")
        lateral = study.view == "LATERAL"
        m = measure(study.pixels, lateral=lateral)
        flags = m.flags()
        if flags:
            answer = "Technical quality limits interpretation: " + "; ".join(flags) + "."
        else:
            answer = (f"Technical quality adequate: {m.dark_clipped + m.bright_clipped:.1%} of the central field "
                      f"clipped, contrast spread {m.contrast:.2f}"
                      + ("" if m.midline_offset is None else f", mediastinal band {abs(m.midline_offset):.0%} off centre")
                      + f", {m.short_side} px short side.")
        if lateral:
            answer += " (Lateral view: centring not assessed.)"
        return Evidence(
            tool=self.name,
            answer=answer,
            latency_ms=(time.perf_counter() - t0) * 1000,
            meta={"metrics": m.__dict__, "flags": flags, "heuristic": True},
        )
