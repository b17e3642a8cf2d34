"""A chat page's upload is made for its conversation: the graph's own store records a pending reference
for the page's thread, and a loader that stores the upload elsewhere (the graph server's) is told the
thread, so forgetting another conversation on the same image keeps it for this one."""

from __future__ import annotations

import numpy as np

from cxr_agent.settings import Settings
from tools.ingestion.intake import Studies
from tools.ingestion.pending import holders
from tools.ingestion.study import Study
from ui import session as S


def _study() -> Study:
    return Study.from_array(np.linspace(0, 1, 32 * 24, dtype=np.float32).reshape(24, 32), view="PA")


def test_the_pages_store_holds_the_upload_for_its_conversation(tmp_path):
    settings = Settings(model_profile="tiny", offline=True, data_dir=tmp_path)
    state: dict = {}
    S.init_session(state)
    S.ingest_upload(state, "x.png", b"bytes", loader=lambda data, filename=None: _study())
    assert S.take_study_inputs(state, Studies(settings)) == {"study_id": _study().id}
    assert holders(settings, [_study().id]) == {_study().id: {state[S.K_THREAD]: ""}}


def test_a_loader_that_stores_the_upload_is_told_the_conversation():
    seen: list = []

    def server_loader(data: bytes, *, filename: str | None = None, thread_id: str | None = None) -> Study:
        seen.append(thread_id)
        return _study()

    state: dict = {}
    S.init_session(state)
    assert S.ingest_upload(state, "x.png", b"bytes", loader=server_loader) is None
    assert seen == [state[S.K_THREAD]]
