"""The labeler's per-sentence memo: a sentence seen before is not labelled again, and nothing changes."""

from __future__ import annotations

import pytest

from knowledge.labeler import LABELER_VERSION, SENTENCE_MEMO, SentenceMemo, find_mentions, label_report


@pytest.fixture()
def memo():
    SENTENCE_MEMO.clear()
    yield SENTENCE_MEMO
    SENTENCE_MEMO.clear()


def _dump(text: str) -> list[dict]:
    return [c.model_dump() for c in label_report(text)]


def test_a_repeated_sentence_is_read_from_the_memo(memo) -> None:
    label_report("No pneumothorax. Possible small left effusion.")
    assert (memo.hits, memo.misses) == (0, 2)
    # a different report that repeats both sentences, in another order and case, after a new one
    text = "Stable 4 mm nodule in the right upper lobe. possible small left effusion. NO PNEUMOTHORAX."
    calls = {c.finding: c for c in label_report(text)}
    assert (memo.hits, memo.misses) == (2, 3)
    # offsets and quoted words are this report's, not the report the memo was filled from
    assert calls["pneumothorax"].text == "PNEUMOTHORAX" and text[slice(*calls["pneumothorax"].span)] == "PNEUMOTHORAX"
    assert calls["pleural_effusion"].status.value == "uncertain"
    assert text[slice(*calls["pleural_effusion"].span)] == calls["pleural_effusion"].text
    assert calls["nodule"].status.value == "present"


def test_memoised_labels_equal_fresh_ones(memo) -> None:
    texts = ["The heart is enlarged, consistent with cardiomegaly. The lungs are clear. No pleural effusion.",
             "The lungs are clear. No pleural effusion. No pneumothorax, possible small effusion on the left.",
             "Heart size is normal. The lungs are clear. No pleural effusion. Cannot exclude pneumonia."]
    first = [_dump(t) for t in texts]
    again = [_dump(t) for t in texts]
    assert memo.hits >= 6
    assert first == again
    for t in texts:
        assert find_mentions(t) == find_mentions(t, memo=False) == find_mentions(t, prefilter=False)


def test_memo_is_bounded_and_keyed_by_version() -> None:
    small = SentenceMemo(maxsize=3)
    for i in range(5):
        small.put(f"sentence {i}.", ())
    assert len(small) == 3 and small.get("sentence 0.") is None and small.get("sentence 4.") == ()
    assert (LABELER_VERSION, "sentence 4.") in small._items


def test_iu_reports_label_the_same_with_and_without_the_memo(memo) -> None:
    """Every 5th IU report, twice through the memo (filled, then read) and once without it."""
    from tools.retrieval.corpus import iu_xray_reports

    reports = [r.text for r in list(iu_xray_reports())[::5]]
    filled = [find_mentions(t) for t in reports]
    read = [find_mentions(t) for t in reports]
    assert memo.hits > len(reports)  # IU reports share many sentences
    assert filled == read == [find_mentions(t, memo=False) for t in reports]
