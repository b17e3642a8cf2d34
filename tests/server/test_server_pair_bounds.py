"""The two-film upload route shares the upload bounds: with the bytes in flight or the decode queue full it
answers 503/429 before reading a byte of the body, and a body of unknown size is refused (411)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from starlette.requests import Request

from cxr_agent.settings import Settings
from server.app import UploadPressure
from server.pairs import upload_pair


def _call(headers: dict[str, str], pressure: UploadPressure) -> tuple[int, bool]:
    read = []

    async def receive():
        read.append(True)
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/cxr/studies/pair", "query_string": b"thread_id=t1",
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
             "user": SimpleNamespace(identity="alice"), "auth": SimpleNamespace(scopes=["user"])}
    settings = Settings(server_uploads_in_flight_mb=1, decode_concurrency=1, server_upload_queue=1)

    async def refuse(*_a, **_k):
        raise AssertionError("the route went past its bounds")

    response = asyncio.run(upload_pair(Request(scope, receive), settings, SimpleNamespace(), refuse, pressure))
    return response.status_code, bool(read)


def test_a_full_decode_queue_or_byte_budget_refuses_before_reading():
    queue = UploadPressure()
    queue.ingesting = 2
    assert _call({"content-length": "1000"}, queue) == (429, False)
    held = UploadPressure()
    assert held.take(2**20 - 10, 2**20)
    assert _call({"content-length": "1000"}, held) == (503, False)
    assert held.bytes == 2**20 - 10  # nothing reserved by the refusal


def test_a_pair_without_a_known_size_is_refused():
    assert _call({}, UploadPressure()) == (411, False)
    assert _call({"content-length": str(3 * 512 * 2**20)}, UploadPressure()) == (413, False)
