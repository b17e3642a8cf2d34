"""Test-only fixtures for the UI: sample evidence and a scripted stand-in for the graph's stream API.

The stand-in is used only by unit tests of ui/turn.py (stream parsing); the app tests drive the
real graph.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage

from knowledge.evidence import Box, Decision, Evidence, FindingCall, RetrievedReport, Status

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"


def nih_png(shared_data: Path) -> Path:
    """A real 1024x1024 NIH ChestX-ray14 PNG."""
    return sorted((shared_data / "nih_cxr14" / "images").glob("*.png"))[0]


def dicom_file(shared_data: Path) -> Path:
    """A real 8-bit JPEG-baseline CR DICOM (SIIM)."""
    return shared_data / "dicom" / "siim_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def sample_evidence() -> list[Evidence]:
    return [
        Evidence(
            tool="vlm",
            report="Small left pleural effusion. No pneumothorax.",
            calls=[
                FindingCall(finding="pleural_effusion", status=Status.present, source="vlm",
                            box=Box(x1=0.6, y1=0.6, x2=0.9, y2=0.9), text="Small left pleural effusion"),
                FindingCall(finding="pneumothorax", status=Status.absent, source="vlm", text="No pneumothorax"),
            ],
            latency_ms=1234.0,
        ),
        Evidence(
            tool="classifier",
            calls=[
                FindingCall(finding="pleural_effusion", status=Status.present, score=0.81, score_kind="op_norm",
                            source="classifier"),
                FindingCall(finding="pneumothorax", status=Status.present, score=0.66, score_kind="op_norm",
                            source="classifier"),
                FindingCall(finding="cardiomegaly", status=Status.absent, score=0.21, score_kind="op_norm",
                            source="classifier"),
            ],
            latency_ms=88.0,
        ),
        Evidence(
            tool="retrieval",
            calls=[
                FindingCall(finding="pleural_effusion", status=Status.present, score=0.6,
                            score_kind="neighbor_fraction", source="retrieval"),
                FindingCall(finding="emphysema", status=Status.uncertain, score=0.1,
                            score_kind="neighbor_fraction", source="retrieval"),
            ],
            neighbors=[
                RetrievedReport(id=f"iu-{i}", score=0.9 - i * 0.05, text=f"Prior report {i}: effusion.",
                                labels=["pleural_effusion"] if i < 6 else [])
                for i in range(10)
            ],
            latency_ms=20.0,
        ),
        Evidence.failure("rib_counter", "rib_counter timed out after 300 s", latency_ms=300000.0),
    ]


def sample_decisions() -> list[Decision]:
    return [
        Decision(finding="pleural_effusion", status=Status.present, confidence=0.86, agreeing=["vlm", "classifier"],
                 rationale="VLM and classifier agree."),
        Decision(finding="pneumothorax", status=Status.uncertain, confidence=0.5, agreeing=[],
                 disagreeing=["vlm", "classifier"], conflict=True, needs_review=True,
                 verification="VLM re-ask: uncertain", rationale="Image sources disagree; flagged for review."),
        Decision(finding="cardiomegaly", status=Status.absent, confidence=0.79, agreeing=["classifier"],
                 rationale="Classifier below threshold."),
    ]


class ScriptedGraph:
    """Replays a fixed list of (mode, chunk) items and a final state, like a compiled graph would."""

    def __init__(self, items: list[tuple[str, Any]], values: dict[str, Any], *, fail_at: int | None = None):
        self.items = items
        self.values = values
        self.fail_at = fail_at
        self.calls: list[tuple[dict[str, Any], dict[str, Any], Any]] = []

    def stream(self, inputs: dict[str, Any], config: dict[str, Any], stream_mode: Any = None):
        self.calls.append((inputs, config, stream_mode))
        for i, item in enumerate(self.items):
            if self.fail_at is not None and i == self.fail_at:
                raise RuntimeError("boom in node")
            yield item

    def get_state(self, config: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(values=self.values)


def scripted_record(reply: str, **over: Any) -> Any:
    """The turn record the scripted report turn ends with (as the respond node writes it)."""
    from agents.turn.record import build_record

    return build_record({"intent": "report"}, sample_evidence(), sample_decisions(), [], reply,
                        study_id="a" * 64).model_copy(update=over)


def scripted_report_graph() -> ScriptedGraph:
    reply = "Small left pleural effusion [vlm, classifier]."
    cxr = {
        "study_id": "a" * 64,
        "intent": "report",
        "demo": True,
        "boxes": [{"finding": "pleural_effusion", "source": "vlm", "x1": 0.6, "y1": 0.6, "x2": 0.9, "y2": 0.9,
                   "label": "effusion"}],
        "heatmaps": [],
        "unavailable": ["rib_counter"],
    }
    items = [
        ("custom", {"event": "route", "intent": "report", "finding": None, "tools": ["vlm", "classifier"],
                    "reason": "asks for a report"}),
        ("updates", {"router": {"route": {"intent": "report"}}}),
        ("custom", {"event": "tool_start", "tool": "vlm"}),
        ("custom", {"event": "token", "tool": "vlm", "text": "Small "}),
        ("custom", {"event": "token", "tool": "vlm", "text": "effusion."}),
        ("custom", {"event": "tool_end", "tool": "vlm", "ok": True, "latency_ms": 1234.4, "error": None}),
        ("custom", {"event": "tool_start", "tool": "retrieval", "building_index": True}),  # as the graph marks a first-use build
        ("custom", {"event": "tool_end", "tool": "rib_counter", "ok": False, "latency_ms": 300000,
                    "error": "rib_counter timed out after 300 s"}),
        ("custom", {"event": "reconcile", "decisions": 3, "conflicts": ["pneumothorax"]}),
        ("custom", {"event": "verify", "finding": "pneumothorax", "outcome": "unresolved"}),
        ("custom", {"event": "reply", "text": reply}),
        ("updates", {"respond": {"messages": [AIMessage(content=reply, additional_kwargs={"cxr": cxr})],
                                 "record": scripted_record(reply)}}),
    ]
    values = {
        "messages": [HumanMessage("Write a report"), AIMessage(content=reply, additional_kwargs={"cxr": cxr})],
        "evidence": [e.model_dump(mode="json") for e in sample_evidence()],  # dicts, as from a checkpoint
        "decisions": sample_decisions(),
        "study_id": "a" * 64,
    }
    return ScriptedGraph(items, values)
