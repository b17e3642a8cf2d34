"""Keep what a one-time load leaves in memory out of the cyclic garbage collector's full collections.

Why: the NLP pipeline and the models (spaCy + medspaCy, which import torch, sklearn and nltk; the VLM,
the classifier, the embedder) leave hundreds of thousands of long-lived objects, and every full
collection walks all of them, a cost every turn shares (ARCHITECTURE.md has the measurement).
``settle()``, called right after such a load, collects what is already garbage and moves every live
object into the permanent generation (``gc.freeze``), which collections skip. Frozen objects are still
freed by reference counting; only one that later becomes part of a reference cycle is never reclaimed,
so call it after one-time loads, never per turn.
"""

from __future__ import annotations

import gc
import threading

_LOCK = threading.Lock()


def settle() -> None:
    """Collect, then freeze the live heap (off with ``CXR_AGENT_GC_FREEZE=false``)."""
    from cxr_agent.settings import get_settings

    if not get_settings().gc_freeze:
        return
    with _LOCK:
        gc.collect()
        gc.freeze()
