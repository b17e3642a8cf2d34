"""Multiple-choice benchmarks: the published formats are read, every question gets its own thread, a
rerun resumes, the ablation flag changes which tools run, abstentions and skipped figures count, and
the report is written. Fixtures (tests/fixtures/mcq) are synthetic questions in the exact published
layouts; figures are links to the shared real radiographs, made in a temporary folder."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from mcq_tools import Tool, answerer  # tests/mcq_tools.py

from agents.turn.multiple_choice import MultipleChoice, MultipleChoiceQuestion
from eval.mcq import adapters, report, runner
from eval.mcq.stats import bootstrap_ci, summarize
from knowledge.evidence import Box

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mcq"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools" / "vlm"))


@pytest.fixture
def cab(tmp_path: Path, cxr_images: list[Path]) -> Path:
    """The ChestAgentBench fixture with its figures linked to real radiographs."""
    root = tmp_path / "cab"
    shutil.copytree(FIXTURES / "chestagentbench", root)
    for i, rel in enumerate(["figures/90001/figure_1.png", "figures/90002/figure_1.png", "figures/90002/figure_2.png"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(cxr_images[i])
    return root


@pytest.fixture
def rex(tmp_path: Path, cxr_images: list[Path]) -> Path:
    root = tmp_path / "rex"
    shutil.copytree(FIXTURES / "rexvqa", root)
    for i, study in enumerate(["S1", "S2", "S3"]):
        (root / "deid_png" / study).mkdir(parents=True)
        (root / "deid_png" / study / "image_0.png").symlink_to(cxr_images[i])
    return root


# ------------------------------------------------------------------------------------------- adapters

def test_chestagentbench_metadata_is_read_in_its_published_layout(cab: Path) -> None:
    items = adapters.load("chestagentbench", cab)
    assert [it.id for it in items] == ["90001_q1", "90001_q2", "90001_q3", "90002_q1", "90002_q2"]
    first = items[0]
    assert first.options["A"] == "Pleural effusion" and sorted(first.options) == list("ABCDEF")
    assert first.question.endswith("frontal chest radiograph?") and "A)" not in first.question
    assert first.categories == ("detection", "classification") and first.answer == "A"
    assert first.images == (cab / "figures/90001/figure_1.png",)
    skipped = [it for it in items if it.skip]
    assert [it.id for it in skipped] == ["90002_q1"] and "CT" in skipped[0].skip
    # a curated list drops a figure by path, or a whole case
    listed = adapters.load_chestagentbench(cab, non_cxr={"figures/90002/figure_1.png"})
    assert {it.id for it in listed if it.skip} == {"90002_q1", "90002_q2"}
    assert {it.id for it in adapters.load_chestagentbench(cab, non_cxr={"case:90001"}) if it.skip} >= {"90001_q1"}


def test_rexvqa_json_is_read_and_non_radiographs_are_skipped(rex: Path) -> None:
    items = adapters.load("rexvqa", rex / "metadata" / "test_vqa_data.json")
    assert len(items) == 4
    a = items[0]
    assert a.options == {"A": "Yes, pleural effusion is present", "B": "No pleural effusion is present",
                         "C": "Only pneumothorax is present", "D": "Only atelectasis is present"}
    assert a.images == (rex / "deid_png" / "S1" / "image_0.png",) and a.images[0].exists()
    assert a.categories == ("presence",) and a.case_id == "S1" and a.context == "Shortness of breath."
    assert [it.skip for it in items][:3] == [None, None, None] and "modality CT" in items[3].skip
    assert "synthetic-patient" not in json.dumps([it.__dict__ for it in items], default=str)  # patient fields unread
    assert len(adapters.load("rexvqa", rex)) == 4  # the folder finds metadata/*_vqa_data.json


def test_malformed_benchmark_files_are_refused_precisely(tmp_path: Path) -> None:
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"question": "Q?\nA) x\nB) y", "case_id": "1",
                                                         "images": []}) + "\n")
    with pytest.raises(adapters.BenchFormatError, match="line 1: missing field 'answer'"):
        adapters.load_chestagentbench(tmp_path, non_cxr=())
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"question": "Q? no options", "answer": "A", "case_id": "1",
                                                         "images": ["f.png"]}) + "\n")
    with pytest.raises(adapters.BenchFormatError, match="0 lettered options"):
        adapters.load_chestagentbench(tmp_path, non_cxr=())
    with pytest.raises(adapters.BenchFormatError, match="unknown benchmark 'mimic'"):
        adapters.load("mimic", tmp_path)
    with pytest.raises(ValueError, match="at least 2 options"):
        MultipleChoiceQuestion(question="Q?", options={"A": "x"}, images=[Path("x.png")])


# ------------------------------------------------------------------------------------------- runs

def _rows(path: Path) -> list[dict]:
    return runner.read_rows(path)


def test_each_question_gets_a_fresh_thread_and_a_rerun_resumes(cab: Path, tmp_path: Path) -> None:
    items = adapters.load("chestagentbench", cab)
    vlm = Tool("vlm", {"pleural_effusion": 0.9}, intents=("finding_question", "locate", "chat"), chat="A")
    mc = answerer(vlm)
    out = tmp_path / "res.jsonl"
    cfg = runner.RunConfig(bench="chestagentbench", tools=("vlm",))
    first = runner.run(items[:2], mc, cfg, out)
    assert len(first) == 2
    runner.run(items, mc, cfg, out)  # resumes: the two done ids are not asked again
    rows = _rows(out)
    assert [r["id"] for r in rows] == [it.id for it in items]
    answered = [r for r in rows if r["status"] != "skipped"]
    threads = [r["thread_id"] for r in answered]
    assert len(set(threads)) == len(answered) == 4  # one thread per question, even within a case
    seen = {}
    for req in vlm.requests:
        seen.setdefault(req.thread_id, set()).add(req.text.splitlines()[0])
    assert set(seen) == set(threads) and all(len(v) == 1 for v in seen.values())  # no thread saw two questions
    assert all(not req.history for req in vlm.requests)
    asked = len(vlm.requests)
    runner.run(items, mc, cfg, out)
    assert len(vlm.requests) == asked and len(_rows(out)) == 5  # a complete file: nothing asked again
    with pytest.raises(runner.RunConfigError, match="another configuration"):
        runner.run(items, mc, runner.RunConfig(bench="chestagentbench", tools=("classifier",)), out)


def test_thread_per_case_is_explicit_and_shares_the_case_thread(cab: Path, tmp_path: Path) -> None:
    items = [it for it in adapters.load("chestagentbench", cab) if not it.skip]
    vlm = Tool("vlm", {}, intents=("finding_question", "chat"), chat="A")
    out = tmp_path / "case.jsonl"
    runner.run(items, answerer(vlm), runner.RunConfig(bench="chestagentbench", tools=("vlm",), thread_per="case"), out,
               concurrency=2)  # cases in parallel, a case's questions in order
    rows = _rows(out)
    by_case = {}
    for r in rows:
        by_case.setdefault(r["case_id"], set()).add(r["thread_id"])
        assert r["config"]["thread_per"] == "case"
    assert all(len(t) == 1 for t in by_case.values()) and len(by_case) == 2
    chats = [r for r in vlm.requests if r.intent == "chat"]
    third = next(r for r in chats if r.text.startswith("Given the history"))
    assert [t["role"] for t in third.history] == ["user", "assistant"] * 2  # it sees the case's two earlier ones
    assert third.history[2]["content"] == "On which side is the pleural effusion?"


def test_abstentions_and_skipped_figures_stay_in_the_denominator() -> None:
    rows = [{"id": str(i), "gold": g, "letter": p, "status": s, "categories": ["c"], "thread_id": f"t{i}",
             "decided_by": d, "confidence": c, "config": {"tools": ["vlm"]}}
            for i, (g, p, s, d, c) in enumerate([("A", "A", "answered", "tools", 0.9), ("A", "B", "answered", "tools", 0.7),
                                                  ("B", None, "abstained", "fallback", None),
                                                  ("A", None, "skipped", None, None)])]
    s = summarize(rows)
    assert s["overall"]["n"] == 4 and s["overall"]["accuracy"] == 0.25 and s["overall"]["coverage"] == 0.5
    assert s["overall"]["selective_accuracy"] == 0.5
    assert s["status"] == {"answered": 2, "abstained": 1, "skipped": 1, "error": 0}
    assert s["bias_floor"] == {"letter": "A", "accuracy": 0.75}  # from the data: three of four golds are A
    assert s["gold_letters"] == {"A": 3, "B": 1} and s["predicted_letters"] == {"A": 1, "B": 1}
    assert s["confusion"]["A"] == {"A": 1, "B": 1, "-": 1}
    assert s["calibration"]["n"] == 2
    lo, hi = bootstrap_ci([True] * 30 + [False] * 70)
    assert lo < 0.3 < hi and hi - lo < 0.25
    assert bootstrap_ci([True] * 10) == (1.0, 1.0)


def test_both_benchmarks_end_to_end_on_the_tiny_profile_and_fake_radvlm(cab: Path, rex: Path, tmp_path: Path,
                                                                        make_graph, settings) -> None:
    from fake_radvlm import FakeRadVLM  # tests/tools/vlm/fake_radvlm.py

    from tools.vlm.tool import VLMTool

    fake = FakeRadVLM(yes=lambda t: t in ("pleural effusion", "cardiomegaly"))
    g = make_graph(VLMTool(settings, backend=fake), builtin=True)
    outs = {}
    for bench, path in (("chestagentbench", cab), ("rexvqa", rex)):
        items = adapters.load(bench, path)
        for arm in (("vlm", "classifier"), ("vlm",)):  # the tiny classifier costs seconds a call: one arm
            mc, names = runner.answerer_for(g, arm)
            out = tmp_path / f"{bench}-{'+'.join(names)}.jsonl"
            runner.run(items, mc, runner.RunConfig(bench=bench, tools=names, profile="tiny"), out)
            rows = _rows(out)
            assert len(rows) == len(items) and {r["status"] for r in rows} <= {"answered", "abstained", "skipped"}
            assert sum(r["status"] == "skipped" for r in rows) == 1
            called = {t for r in rows for t in r["tools_called"]}
            assert called == set(names)  # the ablation flag decides which tools run (counted per question)
            outs[(bench, names)] = out
    both = _rows(outs[("chestagentbench", ("vlm", "classifier"))])
    first = next(r for r in both if r["id"] == "90001_q1")
    assert first["letter"] == "A" and first["decided_by"] == "tools"  # the VLM's trained 'yes' on effusion
    assert {"question", "grounding"} <= set(fake.tasks)
    # every ask but the direct one uses RadVLM's trained forms
    assert all(u.endswith("Answer with the letter of the single best option.") for u in fake.untrained)
    summaries = [summarize(_rows(outs[k])) for k in outs if k[0] == "chestagentbench"]
    html = report.html_page(summaries, title="t", note="Demo profile: tiny random models; these numbers have no value.")
    assert html.count("data:image/png;base64,") == 3 and "these numbers have no value" in html
    assert "http" not in html.replace("https://www.eurorad.org", "")  # self-contained: nothing fetched
    md = report.markdown(summaries)
    assert "| vlm+classifier |" in md and "| vlm |" in md and "Bias floor" in md


def test_the_cli_runs_resumes_and_reports(cab: Path, tmp_path: Path, monkeypatch, make_graph) -> None:
    from typer.testing import CliRunner

    from cli import evaluate
    from cli.main import app

    vlm = Tool("vlm", {"pleural_effusion": 0.9, "cardiomegaly": 0.8}, intents=("finding_question", "locate", "chat"),
               box=Box(x1=0.05, y1=0.5, x2=0.35, y2=0.9), chat="Answer: A", writes_report=True)
    cls = Tool("classifier", {"pleural_effusion": 0.8})
    custom = Tool("nodule-ai", {"cardiomegaly": 0.9})
    g = make_graph(vlm, cls, custom)
    monkeypatch.setattr(evaluate, "_mcq_graph", lambda _s: g)
    cli = CliRunner()
    out = tmp_path / "r.jsonl"
    res = cli.invoke(app, ["eval", "mcq", "chestagentbench", str(cab), "--out", str(out), "--limit", "2",
                           "--tools", "vlm"])
    assert res.exit_code == 0, res.output
    assert len(_rows(out)) == 2 and not cls.requests
    res = cli.invoke(app, ["eval", "mcq", "chestagentbench", str(cab), "--out", str(out), "--tools", "vlm"])
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in _rows(out)] == ["90001_q1", "90001_q2", "90001_q3", "90002_q1", "90002_q2"]
    bad = cli.invoke(app, ["eval", "mcq", "chestagentbench", str(cab), "--tools", "vlm,xray-ai"])
    assert bad.exit_code == 1 and "unknown tool(s) xray-ai" in bad.output
    bad = cli.invoke(app, ["eval", "mcq", "chestagentbench", str(cab), "--thread-per", "session"])
    assert bad.exit_code == 1 and "--thread-per must be 'question' or 'case'" in bad.output
    arm = tmp_path / "custom.jsonl"  # a custom tool is an arm like any other
    res = cli.invoke(app, ["eval", "mcq", "chestagentbench", str(cab), "--out", str(arm), "--tools", "nodule-ai"])
    assert res.exit_code == 0, res.output
    assert {t for r in _rows(arm) for t in r["tools_called"]} == {"nodule-ai"} and custom.requests
    page = tmp_path / "rep.html"
    res = cli.invoke(app, ["eval", "mcq-report", str(out), str(arm), "--out", str(page)])
    assert res.exit_code == 0, res.output
    assert page.read_text().startswith("<!doctype html>") and "Letter confusion" in page.read_text()
    md = page.with_suffix(".md").read_text()
    assert "| vlm |" in md and "| nodule-ai |" in md


def test_concurrency_is_capped_by_the_vlm_backend(settings) -> None:
    assert runner.max_concurrency(settings) == 1  # in process: one generation at a time
    served = settings.model_copy(update={"vlm_backend": "openai", "tool_workers": 6})
    assert runner.max_concurrency(served) == 6


def test_a_question_whose_figure_cannot_be_read_is_an_error_row_in_the_denominator(tmp_path: Path) -> None:
    def missing(p: Path):
        raise FileNotFoundError(f"no such figure: {p.name}")

    item = adapters.BenchItem(id="q", case_id="c", question="Which?", options={"A": "Pneumothorax", "B": "Edema"},
                              answer="A", images=(tmp_path / "gone.png",))
    mc = MultipleChoice({"vlm": Tool("vlm", {})}, missing)
    out = tmp_path / "e.jsonl"
    runner.run([item], mc, runner.RunConfig(bench="chestagentbench", tools=("vlm",)), out)
    (row,) = _rows(out)
    assert row["status"] == "error" and "FileNotFoundError" in row["reason"] and row["letter"] is None
    assert summarize([row])["overall"]["accuracy"] == 0.0


def test_sample_and_limit_choose_a_seeded_subset_in_file_order(cab: Path) -> None:
    items = adapters.load("chestagentbench", cab)
    a = runner.choose(items, sample=3, seed=1)
    assert a == runner.choose(items, sample=3, seed=1) and len(a) == 3
    assert [items.index(it) for it in a] == sorted(items.index(it) for it in a)
    assert runner.choose(items, limit=2) == items[:2]


def test_options_written_on_one_line_are_split_too() -> None:
    stem, options = adapters.split_options("Which finding? A) Pleural effusion B) Pneumothorax C) Normal study")
    assert stem == "Which finding?" and options == {"A": "Pleural effusion", "B": "Pneumothorax", "C": "Normal study"}
    assert adapters.split_options("Is the sign (a) subtle?") == ("Is the sign (a) subtle?", {})
