"""Run by tests/server/test_prod_server.py in a fresh interpreter: the chat app in remote mode (AppTest)
against the production server: upload the image named on the command line, ask for a report, then a
follow-up; print one JSON line with both turns and the heavy modules the app process imported."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"
HEAVY = ("torch", "transformers", "graph", "agents.turn.nodes")


def _ask(at: AppTest, text: str) -> dict:
    at.chat_input[0].set_value(text)
    at.run()
    assert at.session_state["cxr_worker"].wait_idle(240), "the turn did not finish"
    at.run()
    turn = at.session_state["cxr_turns"][-1]
    return {"reply": turn.reply, "error": turn.error, "study_id": (turn.cxr or {}).get("study_id")}


def main() -> None:
    image = Path(sys.argv[1])
    at = AppTest.from_file(str(APP), default_timeout=240)
    at.run()
    at.file_uploader[0].upload(image.name, image.read_bytes(), "image/png")
    at.run()
    turns = [_ask(at, "Write a report"), _ask(at, "Is there cardiomegaly?")]
    print(json.dumps({"thread": at.session_state["cxr_thread_id"], "study_id": at.session_state["cxr_study"].id,
                      "turns": turns, "exceptions": [str(e.value) for e in at.exception],
                      "heavy_modules": sorted(m for m in HEAVY if m in sys.modules)}))


if __name__ == "__main__":
    main()
