"""bench/load.py's bookkeeping (the load itself runs under `make bench-load`, against a real server)."""

from __future__ import annotations

import pytest

from bench import load
from bench.__main__ import discover


def test_percentiles_pick_from_the_sorted_samples():
    samples = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert load.percentile(samples, 0.5) == 3.0 and load.percentile(samples, 0.95) == 5.0
    assert load.percentile([7.0], 0.95) == 7.0


def test_the_tally_counts_turns_in_flight_and_keeps_only_answered_turns():
    tally = load.Tally()
    tally.start()
    tally.start()
    tally.end("report", 1.5)
    tally.end(None, 9.0)  # no reply: not a turn time (the caller records the error)
    tally.start()
    tally.end("report", 0.5)
    assert tally.most_in_flight == 2 and tally.in_flight == 0 and tally.times == {"report": [1.5, 0.5]}


@pytest.mark.parametrize("flag", ["--users", "--turns", "--rounds", "--jobs"])
def test_a_count_below_one_is_refused_naming_it(flag, capsys):
    with pytest.raises(SystemExit):
        load.main([flag, "0"])
    assert f"{flag} must be at least 1 (got 0)" in capsys.readouterr().err


def test_the_load_bench_is_not_part_of_make_bench():
    assert "load" not in discover() and "graph" in discover()
