"""The UI as a client of LangGraph Server (CXR_AGENT_GRAPH_URL): a real `langgraph dev` serves the graph.

The app runs in its own interpreter (AppTest in tests/ui/remote_app_driver.py), uploads a real NIH
PNG, asks for a report, and must show the streamed progress, the reply, the evidence table and the
heatmap overlay fetched from the server, while importing no torch/transformers and storing nothing
in its own data dir: the study went to the server's upload route and only its id into the run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from langgraph_server import LangGraphServer, langgraph_dev
from ui_helpers import nih_png

from ui.evidence_table import COL_CLASSIFIER
from ui.remote import server_thread_id

pytestmark = pytest.mark.timeout(300)
DRIVER = Path(__file__).with_name("remote_app_driver.py")


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> LangGraphServer:
    # The AppTest suite covers verification; re-asks are skipped here to keep the turn short.
    with langgraph_dev(tmp_path_factory.mktemp("langgraph-ui"), {"CXR_AGENT_VERIFY_CONFLICTS": "false"}) as server:
        yield server


def _client_env(server: LangGraphServer, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_AGENT_")}
    return {**env, "CXR_AGENT_GRAPH_URL": server.url, "CXR_AGENT_DATA_DIR": str(data_dir),
            "CXR_AGENT_MODEL_PROFILE": "tiny", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}


@pytest.fixture(scope="module")
def remote_page(served, shared_data, tmp_path_factory) -> dict:
    ui_data = tmp_path_factory.mktemp("ui-replica-data")
    png = nih_png(shared_data)
    proc = subprocess.run([sys.executable, str(DRIVER), str(png)], env=_client_env(served, ui_data),
                          capture_output=True, text=True, timeout=280, cwd=DRIVER.parents[2])
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["ui_data"] = ui_data
    return out


def test_remote_app_holds_no_models(remote_page):
    assert remote_page["heavy_modules"] == []  # no torch, transformers, graph.py or tool modules imported
    first = remote_page["first"]
    assert not first["exceptions"] and not first["errors"]
    assert any("Graph server" in line and "ready" in line for line in first["markdown"])
    assert any("Graph server" in line and "profile tiny" in line for line in first["sidebar"])


def test_upload_goes_to_the_server_and_only_its_id_into_the_run(remote_page, served):
    sid = remote_page["study_id"]
    assert not remote_page["uploaded"]["errors"] and len(sid) == 64
    assert list(served.data_dir.glob(f"studies/*/{sid}.npy"))  # stored by the server's upload route
    assert not list(Path(remote_page["ui_data"]).rglob("*.npy"))  # nothing stored by the UI replica
    assert remote_page["turn"]["cxr"]["study_id"] == sid


def test_report_turn_streams_progress_reply_evidence_and_overlays(remote_page, served):
    page, turn = remote_page["page"], remote_page["turn"]
    assert not page["exceptions"] and turn["error"] is None, (page["exceptions"], turn["error"])
    steps = "\n".join(turn["progress"])
    assert "Router: **report**" in steps and "vlm finished" in steps and "classifier finished" in steps
    assert "Reconciler" in steps and turn["streamed_chars"] > 0  # custom events (incl. tokens) came through
    assert any(label.startswith("Done in") and state == "complete" for label, state in page["status"])
    assert turn["reply"] and any(turn["reply"][:40] in m for m in page["markdown"])
    assert {"vlm", "classifier", "retrieval"} <= set(turn["evidence_tools"])
    assert turn["recorded"] and turn["writers"] == ["vlm"]  # the turn record came through the server's updates
    assert len(remote_page["frames"]) == 1
    frame = remote_page["frames"][0]
    assert COL_CLASSIFIER in frame["columns"] and frame["rows"] == turn["decisions"] > 0
    # The default overlay: one heatmap, fetched from the server's artifact route (a server path).
    assert turn["cxr"]["heatmaps"] and remote_page["page"]["captions"][0].endswith("1 heatmap(s)")
    assert not any("Heatmap file unavailable" in c for c in page["caption_text"])
    # The conversation lives on the server, under the UUID the UI's thread id maps to.
    threads = httpx.post(f"{served.url}/threads/search", json={"limit": 50}, timeout=10).json()
    assert any(t["values"] and t["values"].get("study_id") == remote_page["study_id"] for t in threads)


def test_delete_this_conversation_deletes_it_on_the_server(served, shared_data, tmp_path):
    png = sorted((shared_data / "nih_cxr14" / "images").glob("*.png"))[1]  # not the report test's image
    proc = subprocess.run([sys.executable, str(DRIVER), "--delete", str(png)], env=_client_env(served, tmp_path),
                          capture_output=True, text=True, timeout=280, cwd=DRIVER.parents[2])
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["answered"] and not out["exceptions"] and out["toasts"] == ["Conversation deleted."]
    assert out["thread_after"] != out["thread"] and out["turns_after"] == 0  # the page starts afresh
    gone = httpx.post(f"{served.url}/threads/search", json={"ids": [server_thread_id(out["thread"])]}, timeout=10)
    assert gone.json() == []  # the server thread...
    assert httpx.get(f"{served.url}/cxr/studies/{out['study_id']}", timeout=10).status_code == 404  # ...and its study
    assert not list(served.data_dir.glob(f"artifacts/{out['study_id']}"))  # ...and its heatmaps


def test_thread_ids_map_to_stable_uuids():
    assert server_thread_id("ui-0123456789abcdef0123456789abcdef") == "01234567-89ab-cdef-0123-456789abcdef"
    assert server_thread_id("cli-1") == server_thread_id("cli-1") != server_thread_id("cli-2")


@pytest.mark.parametrize("url, token, warns", [
    ("http://graph-host:2024", None, True),
    ("https://10.0.0.7", None, True),
    ("http://graph-host:2024", "t0ken", False),
    ("http://127.0.0.1:2024", None, False),
    ("http://localhost:2024", None, False),
])
def test_an_open_server_on_another_machine_is_named_in_a_warning(settings, url, token, warns):
    from pydantic import SecretStr

    from ui.remote import open_server_warning

    said = open_server_warning(settings.model_copy(update={"server_token": SecretStr(token) if token else None}), url)
    assert (said is not None) == warns
    if warns:
        assert "CXR_AGENT_SERVER_TOKEN" in said and url.split("//")[1].split(":")[0] in said


@pytest.mark.browser
def test_remote_mode_in_a_real_browser(served, shared_data, tmp_path):
    """`streamlit run ui/app.py` with CXR_AGENT_GRAPH_URL, driven by Debian's Chromium: upload, report,
    overlay and evidence on the page, and no torch library mapped into the UI server's process."""
    from test_ui_browser import IDLE, OVERLAY_DRAWN, streamlit_page

    with streamlit_page(_client_env(served, tmp_path / "ui-data"), tmp_path) as (page, proc):
        page.get_by_text("Graph server").first.wait_for()
        page.locator("input[type=file]").first.set_input_files(str(nih_png(shared_data)))
        page.get_by_text("Size:").first.wait_for()
        box = page.get_by_test_id("stChatInputTextArea")
        box.fill("Write a report")
        box.press("Enter")
        page.get_by_text(re.compile(r"^Done in \d")).first.wait_for(timeout=240_000)
        page.wait_for_selector(IDLE, timeout=120_000)
        page.get_by_text(OVERLAY_DRAWN).first.wait_for(timeout=60_000)
        page.get_by_test_id("stDataFrame").first.wait_for()  # the evidence table and its classifier legend
        page.get_by_text("Classifier: operating-point-normalised score", exact=False).first.wait_for()
        body = page.inner_text("body")
        maps = Path(f"/proc/{proc.pid}/maps")
        mapped = maps.read_text() if maps.exists() else ""
    assert "Traceback" not in body and "Heatmap file unavailable" not in body
    assert "Write a report" in body and "Evidence" in body and "Graph server" in body
    assert "libtorch" not in mapped and "torch/lib" not in mapped  # the UI replica loaded no torch
