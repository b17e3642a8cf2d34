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


def test_the_slope_is_the_least_squares_growth_per_round():
    assert load.slope([10.0, 11.0, 12.0, 13.0]) == pytest.approx(1.0)
    assert load.slope([5.0, 7.0, 5.0, 7.0]) == pytest.approx(0.4)
    assert load.slope([3.0]) == 0.0


def test_the_memory_row_reads_the_second_half_of_the_rounds_only():
    warm_then_flat = [1400.0, 1450.0, 1470.0, 1480.0, 1481.0, 1480.5, 1481.0, 1480.8]
    row = load.memory_row(warm_then_flat)
    assert row["met"] is True and abs(row["value"]) <= 0.5 and row["note"].startswith("rounds 5-8")
    growing = [1400.0 + 7 * n for n in range(12)]
    assert load.memory_row(growing)["value"] == pytest.approx(7.0) and load.memory_row(growing)["met"] is False


def test_too_few_rounds_give_no_slope_and_say_so():
    row = load.memory_row([1400.0, 1450.0, 1460.0, 1470.0])
    assert row["value"] is None and row["met"] is None and "at least 6" in row["note"]


def test_a_missed_memory_target_fails_the_command(monkeypatch, tmp_path):
    result = {"errors": [], "cross_talk": [], "memory": load.memory_row([1400.0 + 5 * n for n in range(8)])}
    monkeypatch.setattr(load, "run_load", lambda **_: result)
    assert load.main(["--out", str(tmp_path / "load.json")]) == 1
    result["memory"] = load.memory_row([1400.0] * 8)
    assert load.main(["--out", str(tmp_path / "load.json")]) == 0
