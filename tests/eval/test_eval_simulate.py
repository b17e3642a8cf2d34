"""The reconciler simulation: deterministic per seed, sources behave as their profiles say."""

from __future__ import annotations

import pytest

from eval import simulate as sim


def _cases(n: int = 60) -> list[sim.Case]:
    out = []
    for i in range(n):
        pos = {f for k, f in enumerate(sim.NIH_FINDINGS) if (i + k) % 7 == 0}
        out.append(sim.Case(f"c{i}", frozenset(pos), sim.NIH_FINDINGS))
    return out


def test_deterministic_with_seed():
    cases = _cases()
    a = sim.run_profile(cases, sim.PROFILES[0], seed=3)
    b = sim.run_profile(cases, sim.PROFILES[0], seed=3)
    c = sim.run_profile(cases, sim.PROFILES[0], seed=4)
    assert a == b
    assert a["metrics"] != c["metrics"]
    assert a["n_pairs"] == len(cases) * len(sim.NIH_FINDINGS)
    assert set(a["metrics"]) == set(sim.VARIANTS)
    assert set(a["verdict"]) == {f"{v}/{t}" for v in ("reconciled", "verified")
                                 for t in ("uncertain_negative", "uncertain_positive")}


def test_profiles_drive_the_sources():
    cases = _cases()
    perfect_clf = sim.SimProfile("perfect_clf", clf_mu_pos=1.0, clf_sd_pos=0.0, clf_mu_neg=0.0, clf_sd_neg=0.0)
    r = sim.run_profile(cases, perfect_clf, seed=0)
    assert r["metrics"]["classifier"]["uncertain_negative"]["f1"] == 1.0
    mute_vlm = sim.SimProfile("mute", vlm_sensitivity=0.0, vlm_false_positive=0.0)
    r = sim.run_profile(cases, mute_vlm, seed=0)
    assert r["metrics"]["vlm"]["uncertain_negative"]["recall"] == 0.0
    # verdict compares with the better single source
    v = r["verdict"]["reconciled/uncertain_negative"]
    assert v["best_single"] == "classifier"
    assert v["beats_best_single"] == (v["f1"] > r["metrics"]["classifier"]["uncertain_negative"]["f1"])


def test_real_ground_truth_loaders(shared_data):
    nih = sim.nih_cases(shared_data / "nih_cxr14" / "labels.csv")
    assert len(nih) == 92 and sum(bool(c.positives) for c in nih) == 92 - 18  # 18 'No Finding' rows
    iu = sim.iu_cases(limit=40)
    assert len(iu) == 40 and any(c.positives for c in iu)
    assert all(c.positives <= set(sim.IU_FINDINGS) for c in iu)


def test_bench_module_rows(monkeypatch):
    import bench.reconciler_sim as mod

    monkeypatch.setattr(sim, "default_cases", lambda **kw: _cases(30))
    rows = mod.run(quick=True)
    assert len(rows) == len(sim.PROFILES) * 5
    keys = {"benchmark", "metric", "value", "unit", "baseline", "ratio", "target", "note"}
    assert all(keys <= set(r) for r in rows)
    f1_rows = [r for r in rows if r["unit"] == "F1"]
    assert all(r["ratio"] == pytest.approx(r["value"] / r["baseline"], abs=1e-3) for r in f1_rows)


def test_cli_simulate(tmp_path, shared_data):
    import json

    from typer.testing import CliRunner

    from cli.main import app

    out = tmp_path / "s.json"
    r = CliRunner().invoke(app, ["eval", "simulate", "--iu-limit", "0", "-p", "default", "--seed", "1",
                                 "--nih-labels", str(shared_data / "nih_cxr14" / "labels.csv"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "BEATS" in r.output or "LOSES TO" in r.output
    payload = json.loads(out.read_text())
    assert payload["n_cases"] == 92 and payload["profiles"][0]["profile"]["name"] == "default"


def test_the_vlm_classification_option_adds_one_listed_or_unlisted_call_per_chexpert_label():
    import numpy as np

    from knowledge.evidence import Status
    from knowledge.vocabulary import CHEXPERT_LABELS

    chexpert = set(CHEXPERT_LABELS.values()) - {"no_finding"}
    case = sim.Case("c", frozenset({"cardiomegaly", "pleural_effusion"}), sim.NIH_FINDINGS)
    plain = sim.SimProfile()
    with_cls = sim.SimProfile(vlm_classification=True, cls_listed_if_said=1.0, cls_listed_if_true=1.0,
                              cls_listed_if_false=0.0)
    report, clf, _ = sim.simulate_case(case, plain, np.random.default_rng(0))
    both, clf2, _ = sim.simulate_case(case, with_cls, np.random.default_rng(0), np.random.default_rng(1))
    assert clf2 == clf  # the option shifts no other source's draws
    listed = [c for c in both if c.task == "classification"]
    assert {c.finding for c in listed} == chexpert & set(sim.NIH_FINDINGS)  # one per CheXpert label in the universe
    assert {c.finding for c in listed if c.status is Status.present} == {"cardiomegaly", "pleural_effusion"}
    assert [c for c in both if c.task != "classification"] == [c for c in report if c.finding != "no_finding"]
    # run end to end: the VLM as a single source is its report and classification collapsed, deterministic per seed
    cases = _cases(40)
    a = sim.run_profile(cases, sim.SimProfile(vlm_classification=True), seed=2)
    assert a == sim.run_profile(cases, sim.SimProfile(vlm_classification=True), seed=2)
    assert a["metrics"] != sim.run_profile(cases, plain, seed=2)["metrics"]


def test_cli_simulate_with_classification(tmp_path, shared_data):
    import json

    from typer.testing import CliRunner

    from cli.main import app

    out = tmp_path / "s.json"
    r = CliRunner().invoke(app, ["eval", "simulate", "--iu-limit", "0", "-p", "default", "--with-classification",
                                 "--nih-labels", str(shared_data / "nih_cxr14" / "labels.csv"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["profiles"][0]["profile"]["vlm_classification"] is True
