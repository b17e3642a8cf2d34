"""Run by tests/ui/test_ui_remote.py in a fresh interpreter: the app in remote mode under AppTest.

A subprocess, so that ``sys.modules`` shows exactly what the app imported (pytest itself has torch
loaded). Uploads the image named on the command line, asks for a report, and prints one JSON line
describing the page and the heavy modules the app process imported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"
HEAVY = ("torch", "transformers", "torchxrayvision", "faiss", "graph", "agents.turn.nodes", "tools.classifier.tool")


def _page(at: AppTest) -> dict:
    status = list(at.get("status"))
    return {
        "exceptions": [str(e.value) for e in at.exception],
        "errors": [str(e.value) for e in at.error],
        "markdown": [str(m.value) for m in at.markdown],
        "captions": [c for img in at.image for c in img.captions],
        "caption_text": [str(c.value) for c in at.caption],
        "status": [(s.label, s.state) for s in status],
        "sidebar": [str(m.value) for m in at.sidebar.markdown],
    }


def _settle(at: AppTest) -> None:
    """Run the page, let the session's worker thread finish the turn, then draw the page again."""
    at.run()
    assert at.session_state["cxr_worker"].wait_idle(240), "the turn did not finish"
    at.run()


def delete_after_a_question(image: Path) -> None:
    """``--delete``: upload, ask one question, then the sidebar's "Delete now"; print the ids involved."""
    at = AppTest.from_file(str(APP), default_timeout=240)
    at.run()
    at.file_uploader[0].upload(image.name, image.read_bytes(), "image/png")
    at.run()
    at.chat_input[0].set_value("Is there cardiomegaly?")
    _settle(at)
    thread, study = at.session_state["cxr_thread_id"], at.session_state["cxr_study"]
    answered = at.session_state["cxr_turns"][-1].error is None
    at.button(key="cxr_forget").click()
    at.run()
    print(json.dumps({"thread": thread, "study_id": study.id, "answered": answered,
                      "thread_after": at.session_state["cxr_thread_id"], "turns_after": len(at.session_state["cxr_turns"]),
                      "exceptions": [str(e.value) for e in at.exception],
                      "toasts": [str(t.value) for t in at.toast]}))


def main() -> None:
    if sys.argv[1] == "--delete":
        delete_after_a_question(Path(sys.argv[2]))
        return
    image = Path(sys.argv[1])
    at = AppTest.from_file(str(APP), default_timeout=240)
    at.run()
    first = _page(at)
    at.file_uploader[0].upload(image.name, image.read_bytes(), "image/png")
    at.run()
    uploaded = _page(at)
    study = at.session_state["cxr_study"]
    at.chat_input[0].set_value("Write a report")
    _settle(at)
    page = _page(at)
    turn = at.session_state["cxr_turns"][-1]
    frames = [{"columns": [str(c) for c in d.value.columns], "rows": len(d.value)} for d in at.dataframe]
    print(json.dumps({
        "first": first, "uploaded": uploaded, "page": page, "frames": frames,
        "study_id": study.id if study is not None else None,
        "turn": {"reply": turn.reply, "error": turn.error, "progress": turn.progress, "cxr": turn.cxr,
                 "decisions": len(turn.decisions), "evidence_tools": [e.tool for e in turn.evidence],
                 "streamed_chars": turn.streamed_chars, "recorded": turn.record is not None,
                 "writers": list(turn.roles.writers) if turn.roles else None},
        "heavy_modules": sorted(m for m in HEAVY if m in sys.modules),
    }))


if __name__ == "__main__":
    main()
