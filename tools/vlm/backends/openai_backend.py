"""RadVLM behind any OpenAI-compatible server (vLLM, SGLang, TGI...), over plain httpx.

The image goes as a base64 PNG data URL in an ``image_url`` content part of the first user
turn; ``generate_images`` sends a turn of several images in the caller's order (a comparison: prior,
current, then the text), so the server must accept that many per prompt (vLLM's
``--limit-mm-per-prompt``). Retries with exponential backoff on connection errors, HTTP 5xx and 429 (never on other
4xx: the request itself is wrong, and a read timeout is not retried either: the generation
would most likely time out again). Streams with SSE when a token sink is given. ``finish_reason ==
"length"`` (the server stopped at ``max_tokens``) marks the answer truncated. The encoded
data URL is cached per (thread_id, study_id); the server's own prefix cache does the rest.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

import httpx
from PIL import Image

from tools.stop import with_turn_stop
from tools.vlm.backends.base import BackendError, GenerationResult, ModelUnavailable
from tools.vlm.backends.transport import check_transport
from tools.vlm.prompts import ChatTurn

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def image_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def to_openai_messages(turns: list[ChatTurn], data_url: str) -> list[dict[str, Any]]:
    """OpenAI chat messages: image + text in the first user turn (order from ``image_first``), text elsewhere."""
    msgs: list[dict[str, Any]] = []
    image_done = False
    for turn in turns:
        if turn.role == "user" and not image_done:
            parts: list[dict[str, Any]] = [{"type": "text", "text": turn.text}]
            parts.insert(0 if turn.image_first else 1, {"type": "image_url", "image_url": {"url": data_url}})
            msgs.append({"role": "user", "content": parts})
            image_done = True
        else:
            msgs.append({"role": turn.role, "content": turn.text})
    return msgs


class _Retryable(Exception):
    pass


class OpenAIBackend:
    name = "openai"

    def __init__(self, settings: Settings, *, backoff_s: float = 0.5, cache_entries: int = 16,
                 client: httpx.Client | None = None) -> None:
        self.settings = settings
        self.profile = settings.model_profile
        self.model_id = settings.openai_model
        self.base_url = settings.openai_base_url.rstrip("/")
        check_transport(self.base_url, settings.vlm_allow_insecure_remote)  # images leave only over https (E)
        self.url = self.base_url + "/chat/completions"
        self.timeout_s = float(settings.openai_timeout_s)
        self.max_retries = max(0, int(settings.openai_max_retries))
        self.backoff_s = backoff_s
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s)),
            headers={"Authorization": f"Bearer {settings.openai_api_key.get_secret_value()}"},
        )
        self._cache: OrderedDict[Hashable, str] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.cache_entries = cache_entries

    def close(self) -> None:
        self._client.close()

    def cache_clear(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    def _data_url(self, image: Image.Image, key: Hashable | None) -> tuple[str, bool]:
        if key is not None:
            with self._cache_lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    return self._cache[key], True
        url = image_data_url(image)
        if key is not None and self.cache_entries > 0:
            with self._cache_lock:
                self._cache[key] = url
                while len(self._cache) > self.cache_entries:
                    self._cache.popitem(last=False)
        return url, False

    def generate(
        self,
        image: Image.Image,
        turns: list[ChatTurn],
        *,
        cache_key: Hashable | None = None,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
        on_token: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        t0 = time.perf_counter()
        cancel = with_turn_stop(cancel)
        if cancel is not None and cancel.is_set():
            raise BackendError("request cancelled before it was sent (the call timed out or the turn was stopped)")
        data_url, hit = self._data_url(image, cache_key)
        encode_s = time.perf_counter() - t0
        body = self._body(to_openai_messages(turns, data_url), max_new_tokens, on_token)
        if min_new_tokens:
            body["min_tokens"] = int(min_new_tokens)  # vLLM extension; others ignore it
        return self._send(body, on_token, t0, cancel, hit=hit, encode_s=encode_s)

    def generate_images(
        self,
        messages: list[dict[str, Any]],
        *,
        image_keys: Sequence[Hashable | None] | None = None,
        max_new_tokens: int | None = None,
        on_token: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """One request whose turns may hold several images, in order: ``messages`` in the transformers
        chat form (content a string, or parts ``{"type": "image", "image": PIL}`` / ``{"type": "text"}``),
        each image sent as a PNG ``image_url`` part where it stands. ``image_keys``: one cache key per image,
        in order (None: not cached). ``cache_hit`` is True when every image's encoding was reused."""
        t0 = time.perf_counter()
        cancel = with_turn_stop(cancel)
        if cancel is not None and cancel.is_set():
            raise BackendError("request cancelled before it was sent (the call timed out or the turn was stopped)")
        count = sum(1 for m in messages if not isinstance(m.get("content"), str)
                    for p in m["content"] if p.get("type") == "image")
        keys = list(image_keys) if image_keys is not None else [None] * count
        if len(keys) != count:
            raise ValueError(f"image_keys has {len(keys)} keys for {count} images in the messages")
        hits: list[bool] = []
        out: list[dict[str, Any]] = []
        for msg in messages:
            content = msg.get("content")
            if isinstance(content, str):
                out.append({"role": msg["role"], "content": content})
                continue
            parts: list[dict[str, Any]] = []
            for part in content or []:
                kind = part.get("type")
                if kind == "text":
                    parts.append({"type": "text", "text": part["text"]})
                elif kind == "image":
                    image = part.get("image")
                    if not isinstance(image, Image.Image):
                        raise ValueError(f"image part {len(hits) + 1} holds {type(image).__name__}, not a PIL image")
                    url, hit = self._data_url(image, keys[len(hits)])
                    hits.append(hit)
                    parts.append({"type": "image_url", "image_url": {"url": url}})
                else:
                    raise ValueError(f"unknown content part type {kind!r} (expected 'image' or 'text')")
            out.append({"role": msg["role"], "content": parts})
        encode_s = time.perf_counter() - t0
        try:
            return self._send(self._body(out, max_new_tokens, on_token), on_token, t0, cancel,
                              hit=bool(hits) and all(hits), encode_s=encode_s)
        except BackendError as exc:
            if count > 1 and "answered HTTP 400" in str(exc):  # e.g. vLLM refusing more images than it allows
                raise BackendError(f"{exc} (this prompt holds {count} images: the server must accept that many "
                                   f"per prompt, e.g. vLLM's --limit-mm-per-prompt '{{\"image\": {count}}}')") from exc
            raise

    def _body(self, messages: list[dict[str, Any]], max_new_tokens: int | None,
              on_token: Callable[[str], None] | None) -> dict[str, Any]:
        return {
            "model": self.model_id,
            "messages": messages,
            "max_tokens": int(max_new_tokens or self.settings.vlm_max_new_tokens),
            "temperature": 0.0,
            "stream": on_token is not None,
        }

    def _send(self, body: dict[str, Any], on_token: Callable[[str], None] | None, t0: float,
              cancel: threading.Event | None, *, hit: bool, encode_s: float) -> GenerationResult:
        """POST ``body``, retrying connection errors, 5xx and 429 with exponential backoff."""
        last: str = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self.backoff_s * (2 ** (attempt - 1))
                log.warning("VLM server retry %d/%d in %.2f s after: %s", attempt, self.max_retries, delay, last)
                time.sleep(delay)
            try:
                if on_token is not None:
                    result = self._stream(body, on_token, t0, cancel)
                else:
                    result = self._once(body, t0)
            except _Retryable as exc:
                last = str(exc)
                continue
            result.cache_hit, result.encode_s = hit, encode_s
            return result
        raise ModelUnavailable(
            f"the VLM server at {self.base_url} failed after {self.max_retries + 1} attempts: {last}. "
            "Check that it is running and serving the model (CXR_AGENT_OPENAI_BASE_URL, CXR_AGENT_OPENAI_MODEL)."
        )

    def generate_batch(self, image: Image.Image, conversations: list[list[ChatTurn]], *,
                       cache_key: Hashable | None = None, max_new_tokens: int | None = None,
                       cancel: threading.Event | None = None) -> list[GenerationResult]:
        """Concurrent requests (one per conversation): the server batches them and its prefix cache
        serves the shared image prefix. A failed request fails the batch (the tool reports it)."""
        from concurrent.futures import ThreadPoolExecutor

        if not conversations:
            return []
        self._data_url(image, cache_key)  # encode once, before the threads race for it
        cancel = with_turn_stop(cancel)  # the pool's threads below have no run context
        with ThreadPoolExecutor(max_workers=min(8, len(conversations)), thread_name_prefix="vlm-batch") as pool:
            futures = [pool.submit(self.generate, image, turns, cache_key=cache_key, max_new_tokens=max_new_tokens,
                                   cancel=cancel) for turns in conversations]
            return [f.result() for f in futures]

    # ------------------------------------------------------------------ transport
    def _raise_for(self, exc: Exception) -> None:
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)):
            raise _Retryable(f"cannot connect to {self.base_url} (server not answering: {type(exc).__name__}: {exc})")
        if isinstance(exc, httpx.TimeoutException):
            raise BackendError(
                f"the VLM server at {self.base_url} did not answer within {self.timeout_s:g} s "
                "(raise CXR_AGENT_OPENAI_TIMEOUT_S or check the server's load)"
            ) from exc
        raise BackendError(f"request to the VLM server at {self.base_url} failed: {type(exc).__name__}: {exc}") from exc

    def _check_status(self, resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        msg = f"{self.url} answered HTTP {resp.status_code}: {resp.text[:300].strip()}"
        if resp.status_code in RETRY_STATUS:
            raise _Retryable(msg)
        if resp.status_code in (401, 403):
            raise BackendError(msg + " (check CXR_AGENT_OPENAI_API_KEY)")
        if resp.status_code == 404:
            raise BackendError(msg + f" (is {self.model_id!r} served there? check CXR_AGENT_OPENAI_MODEL and the /v1 in the URL)")
        raise BackendError(msg)

    def _once(self, body: dict[str, Any], t0: float) -> GenerationResult:
        try:
            resp = self._client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            self._raise_for(exc)
            raise  # unreachable
        self._check_status(resp)
        try:
            data = resp.json()
            text = data["choices"][0]["message"]["content"] or ""
            finish = data["choices"][0].get("finish_reason")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BackendError(f"{self.url} returned a malformed chat completion: {resp.text[:200]}") from exc
        usage = data.get("usage") or {}
        done = time.perf_counter()
        return GenerationResult(
            text=text.strip(),
            truncated=finish == "length",  # the server stopped at max_tokens
            prompt_tokens=usage.get("prompt_tokens"),
            new_tokens=usage.get("completion_tokens"),
            ttft_s=None,
            latency_s=done - t0,
        )

    def _stream(self, body: dict[str, Any], on_token: Callable[[str], None], t0: float,
                cancel: threading.Event | None = None) -> GenerationResult:
        pieces: list[str] = []
        first: float | None = None
        n = 0
        usage: dict[str, Any] = {}
        finish: str | None = None
        try:
            with self._client.stream("POST", self.url, json=body) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._check_status(resp)
                for line in resp.iter_lines():
                    if cancel is not None and cancel.is_set():  # closing the stream stops the server's work
                        raise BackendError("generation cancelled (the call timed out or the turn was stopped)")
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    try:
                        chunk = json.loads(payload)
                    except ValueError as exc:
                        raise BackendError(f"{self.url} sent a malformed stream event: {payload[:200]}") from exc
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        finish = choice.get("finish_reason") or finish
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            if first is None:
                                first = time.perf_counter()
                            n += 1
                            pieces.append(piece)
                            try:
                                on_token(piece)
                            except Exception as exc:
                                log.warning("on_token callback failed: %s", exc)
        except httpx.HTTPError as exc:
            if pieces:  # tokens already went out: do not replay the answer
                raise BackendError(f"the VLM server at {self.base_url} dropped the stream: {exc}") from exc
            self._raise_for(exc)
        done = time.perf_counter()
        return GenerationResult(
            text="".join(pieces).strip(),
            truncated=finish == "length",  # the last chunk's finish_reason: stopped at max_tokens
            prompt_tokens=usage.get("prompt_tokens"),
            new_tokens=usage.get("completion_tokens", n),
            ttft_s=(first - t0) if first else None,
            latency_s=done - t0,
        )
