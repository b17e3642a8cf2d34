"""Scripted tools for the eval tests: deterministic outputs and call counters (no model weights)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from knowledge.evidence import Box, Evidence, FindingCall, Status

EFFUSION_BOX = Box(x1=0.5, y1=0.5, x2=0.9, y2=0.9, label="pleural_effusion")


@dataclass
class _Heat:
    box: Box | None


@dataclass
class ScriptedClassifier:
    """Scores: pleural_effusion 0.8 (present) on 64-px-wide images (the effusion image of write_folder) and
    0.2 elsewhere, cardiomegaly 0.55 (uncertain), others 0.2 (absent)."""

    name: str = "classifier"
    calls: int = 0
    heatmaps: int = 0
    scores: dict[str, float] = field(default_factory=lambda: {"pleural_effusion": 0.8, "cardiomegaly": 0.55,
                                                                "pneumothorax": 0.2, "nodule": 0.2})

    def _ev(self, study) -> Evidence:
        from tools.classifier.tool import status_for

        scores = dict(self.scores)
        if study.width != 64:
            scores["pleural_effusion"] = 0.2
        return Evidence(tool="classifier", calls=[
            FindingCall(finding=f, status=status_for(s, 0.1), score=s, score_kind="op_norm", source="classifier")
            for f, s in scores.items()])

    def classify_batch(self, studies, batch_size: int = 8):
        self.calls += len(studies)
        return [self._ev(s) for s in studies]

    def classify(self, study):
        self.calls += 1
        return self._ev(study)

    def heatmap(self, study, finding):
        self.heatmaps += 1
        return _Heat(EFFUSION_BOX if finding == "pleural_effusion" else Box(x1=0, y1=0, x2=0.1, y2=0.1))


@dataclass
class ScriptedVLM:
    """Says yes to pleural effusion on 64-px-wide images, no to the rest; the report mentions an effusion and
    denies a pneumothorax on those images, and is normal elsewhere."""

    name: str = "vlm"
    calls: int = 0
    verifies: int = 0
    report: str = "Small left pleural effusion. No pneumothorax."

    def run(self, request) -> Evidence:
        self.calls += 1
        f = request.finding
        wide = request.study.width == 64
        if request.intent == "report":
            text = self.report if wide else "No acute cardiopulmonary abnormality."
            return Evidence(tool="vlm", report=text, answer=text)
        if request.intent == "locate":
            box = EFFUSION_BOX if f == "pleural_effusion" else Box(x1=0.0, y1=0.0, x2=0.2, y2=0.2)
            return Evidence(tool="vlm", calls=[FindingCall(finding=f, status=Status.present, source="vlm", box=box)])
        st = Status.present if f == "pleural_effusion" and wide else Status.absent
        return Evidence(tool="vlm", calls=[FindingCall(finding=f, status=st, source="vlm", text=st.value)])

    def verify_finding(self, study, finding, **kw) -> Evidence:
        self.verifies += 1
        return Evidence(tool="vlm", calls=[FindingCall(finding=finding, status=Status.absent, source="vlm", text="no")])


def write_folder(root: Path, n: int = 2) -> Path:
    """n small PNGs + a labels.csv in the shared data's format (first image: effusion with a box)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = ["filename,labels,notes,bbox,width,height"]
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = (rng.random((64, 64 if i == 0 else 72)) * 200 + 20).astype(np.uint8)
        Image.fromarray(arr, mode="L").save(root / "images" / f"im{i}.png")
        if i == 0:
            rows.append(f'images/im{i}.png,Effusion,,"Effusion:32,32,26,26",64,64')
        else:
            rows.append(f"images/im{i}.png,No Finding,,,72,64")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root
