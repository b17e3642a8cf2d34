"""A short quote of a report never drops the word that turns its mention around."""

from __future__ import annotations

import re

import pytest

from agents.replying.quotes import CUE, quote_span, quote_text
from knowledge.evidence import Status
from knowledge.labeler import find_mentions


def _quote(text: str, mention: str) -> str:
    a = text.lower().index(mention)
    return quote_span(text, (a, a + len(mention)))


@pytest.mark.parametrize("text, mention, kept", [
    ("No evidence of focal consolidation, pneumothorax or large pleural effusion in either lung field today.",
     "pleural effusion", "No"),
    ("The previously seen right apical pneumothorax on the prior film has now completely resolved after drainage.",
     "pneumothorax", "resolved"),
    ("Heart size enlarged compared with the study from last year, there may be a small pneumothorax at the apex.",
     "pneumothorax", "may"),
    ("The lungs are normally inflated without evidence of focal airspace disease, pleural effusion, or pneumothorax.",
     "pneumothorax", "without"),
])
def test_a_long_sentence_is_cut_but_its_cue_is_kept(text, mention, kept):
    q = _quote(text, mention)
    assert kept in q and mention in q.lower()
    assert len(q) < len(text)


def test_a_bare_positive_never_comes_out_of_a_negated_mention_in_real_reports(iu_reports):
    """Every negated or hedged mention the labeler finds in real IU reports keeps its cue words in its quote."""
    checked = 0
    for text in iu_reports:
        for m in find_mentions(text):
            if m.status is Status.present:
                continue
            cue_words = [w for w in re.findall(r"\S+", m.cue) if CUE.fullmatch(w)]
            if not cue_words:  # a normal statement, a negation inside the phrase itself: nothing outside to keep
                continue
            q = quote_span(text, (m.start, m.end)).lower()
            checked += 1
            for w in cue_words:
                assert re.search(rf"(?<![a-z]){re.escape(w.lower())}(?![a-z])", q), (w, q, text)
    assert checked > 20


def test_a_whole_answer_is_quoted_from_its_start_and_never_cut_before_a_cue():
    assert quote_text("No.") == "“No”"
    long_no = "There is a small opacity at the right base which on this single view is not a consolidation"
    assert quote_text(long_no, limit=40) == f"“{long_no}”"  # a cue after the cut: kept whole
    plain = "Yes, there is a small left pleural effusion layering along the lateral chest wall and the base"
    assert quote_text(plain, limit=40).endswith("…”") and len(quote_text(plain, limit=40)) < 45


def test_a_span_outside_the_text_is_refused():
    with pytest.raises(ValueError, match="span"):
        quote_span("No pneumothorax.", (3, 99))


@pytest.fixture(scope="module")
def iu_reports() -> list[str]:
    from tools.retrieval.corpus import iu_xray_reports

    return [r if isinstance(r, str) else r.text for r in iu_xray_reports(limit=25)]


def test_a_rambling_answer_is_quoted_short_with_its_first_and_last_cue():
    words = " ".join(f"word{i}" for i in range(60))
    text = f"Heart size enlarged {words} no effusion {words} might be edema {words} end"
    q = quote_text(text, limit=60)
    assert len(q) < 140 and q.startswith("“Heart size enlarged")
    assert "… no effusion …" in q and "… might be …" in q  # the first and last cue, each with the word after
