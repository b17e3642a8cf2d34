"""Stopping a generation when the turn is cancelled (a timed-out tool call sets its ``cancel`` event)."""

from __future__ import annotations

import threading
from typing import Any


def cancel_criteria(cancel: threading.Event) -> Any:
    """A StoppingCriteriaList that ends generation (every row) as soon as ``cancel`` is set."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Cancelled()])
