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

from agents.turn.multiple_choice import (
    ChoiceRule,
    MultipleChoice,
    MultipleChoiceQuestion,
    pick,
    read_option,
    score_option,
)
from eval.mcq import adapters, report, runner
from eval.mcq.stats import bootstrap_ci, summarize
from knowledge.evidence import Artifact, Box, Decision, Evidence, FindingCall, Status
from tools.base import ToolRequest

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


class Tool:
    """An image tool with scripted answers per finding; records every request (thread ids included)."""

    image_source = True

    def __init__(self, name: str, present: dict[str, float], *, intents: tuple[str, ...] = ("finding_question",),
                 box: Box | None = None, chat: str | None = None, writes_report: bool = False) -> None:
        self.name, self.present, self.box, self.chat = name, present, box, chat
        self.writes_report = writes_report
        self.intents = frozenset(intents)
        self.requests: list[ToolRequest] = []

    def run(self, r: ToolRequest) -> Evidence:
        self.requests.append(r)
        if r.intent == "chat":
            return Evidence(tool=self.name, answer=self.chat or "I cannot tell.")
        if r.intent == "locate":
            return Evidence(tool=self.name, artifacts=[Artifact(kind="boxes", finding=f, box=self.box)
                                                       for f in r.findings if self.box and f in self.present])
        calls = []
        for f in r.findings:
            s = self.present.get(f, 0.1)
            calls.append(FindingCall(finding=f, status=Status.present if s >= 0.5 else Status.absent, score=s,
                                     score_kind="probability", source=self.name))
        return Evidence(tool=self.name, calls=calls)


def _answerer(*tools: Tool) -> MultipleChoice:
    import numpy as np

    from tools.ingestion.study import Study

    study = Study.from_array(np.zeros((32, 32), dtype=np.float32), view="PA")
    return MultipleChoice({t.name: t for t in tools}, lambda _p: study)


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


# ------------------------------------------------------------------------------------------- the rule

def test_options_are_read_for_finding_negation_and_side() -> None:
    assert read_option("A", "Right-sided pleural effusion").model_dump(include={"findings", "negated", "side"}) == {
        "findings": ["pleural_effusion"], "negated": False, "side": "right"}
    assert read_option("B", "No pneumothorax").negated is True
    assert read_option("C", "Normal chest radiograph").findings == ["no_finding"]
    assert read_option("D", "Bilateral pleural effusions").side == "bilateral"


def test_the_pick_rule_follows_the_decisions_and_abstains_when_they_do_not_decide() -> None:
    rule = ChoiceRule()
    eff = Decision(finding="pleural_effusion", status=Status.present, confidence=0.9)
    opts = [read_option("A", "Pleural effusion"), read_option("B", "No pleural effusion"),
            read_option("C", "Situs inversus")]
    scored = [score_option(o, {"pleural_effusion": eff}, {}, rule) for o in opts]
    assert [o.score for o in scored] == [0.9, pytest.approx(0.1), None]
    assert pick(scored, rule)[0] == "A"
    unsure = Decision(finding="pleural_effusion", status=Status.uncertain, confidence=0.4)
    assert pick([score_option(o, {"pleural_effusion": unsure}, {}, rule) for o in opts], rule)[0] is None
    # a located box on the image's left is the patient's right: 'left-sided' scores 0
    left, right = read_option("A", "Left pleural effusion"), read_option("B", "Right pleural effusion")
    boxes = {"pleural_effusion": [Box(x1=0.05, y1=0.5, x2=0.35, y2=0.9)]}
    got = [score_option(o, {"pleural_effusion": eff}, boxes, rule) for o in (left, right)]
    assert [o.score for o in got] == [0.0, 0.9] and pick(got, rule)[0] == "B"


def test_what_no_tool_decides_goes_to_the_vlm_directly_and_says_so() -> None:
    q = MultipleChoiceQuestion(question="Most likely diagnosis?", options={"A": "Sarcoidosis", "B": "Silicosis"},
                               images=[Path("x.png")])
    vlm = Tool("vlm", {}, intents=("finding_question", "chat"), chat="Answer: B")
    ans = _answerer(vlm).answer(q, thread_id="t1")
    assert (ans.letter, ans.decided_by) == ("B", "vlm_direct") and "answered directly" in ans.reason
    prompt = vlm.requests[-1].text
    assert vlm.requests[-1].intent == "chat" and "A) Sarcoidosis" in prompt and "B) Silicosis" in prompt
    mute = Tool("vlm", {}, intents=("finding_question", "chat"), chat="It could be either.")
    ans = _answerer(mute).answer(q, thread_id="t2")
    assert ans.letter is None and ans.decided_by == "fallback" and ans.abstained and "abstained" in ans.reason
    ans = _answerer(Tool("classifier", {})).answer(q, thread_id="t3")  # no tool that answers directly
    assert ans.letter is None and ans.decided_by == "fallback"


def test_tools_decide_a_presence_question_and_a_side_question() -> None:
    vlm = Tool("vlm", {"pleural_effusion": 0.9}, intents=("finding_question", "locate", "chat"),
               box=Box(x1=0.05, y1=0.5, x2=0.35, y2=0.9), writes_report=True)
    cls = Tool("classifier", {"pleural_effusion": 0.85}, intents=("finding_question", "locate"))
    mc = _answerer(vlm, cls)
    q = MultipleChoiceQuestion(question="Which?", options={"A": "Pleural effusion", "B": "Pneumothorax"},
                               images=[Path("x.png")])
    ans = mc.answer(q, thread_id="t")
    assert (ans.letter, ans.decided_by) == ("A", "tools") and ans.confidence and ans.confidence > 0.6
    assert {d.finding: d.status for d in ans.decisions}["pneumothorax"] is Status.absent
    assert ans.tools_called == {"vlm": 1, "classifier": 1}  # no chat ask: the tools decided
    side = MultipleChoiceQuestion(question="Side?", options={"A": "Left pleural effusion", "B": "Right pleural effusion"},
                                  images=[Path("x.png")])
    ans = mc.answer(side, thread_id="t")
    assert ans.letter == "B" and [r.intent for r in vlm.requests[-2:]] == ["finding_question", "locate"]
    assert [r.intent for r in cls.requests] == ["finding_question"] * 2  # its box comes with its answer


# ------------------------------------------------------------------------------------------- runs

def _rows(path: Path) -> list[dict]:
    return runner.read_rows(path)


def test_each_question_gets_a_fresh_thread_and_a_rerun_resumes(cab: Path, tmp_path: Path) -> None:
    items = adapters.load("chestagentbench", cab)
    vlm = Tool("vlm", {"pleural_effusion": 0.9}, intents=("finding_question", "locate", "chat"), chat="A")
    mc = _answerer(vlm)
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
    runner.run(items, _answerer(vlm), runner.RunConfig(bench="chestagentbench", tools=("vlm",), thread_per="case"), out,
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


def test_retrieval_is_a_prior_that_never_decides_on_its_own() -> None:
    class Prior:
        name, intents, image_source = "retrieval", frozenset({"similar_cases"}), False

        def __init__(self) -> None:
            self.requests: list[ToolRequest] = []

        def run(self, r: ToolRequest) -> Evidence:
            self.requests.append(r)
            return Evidence(tool="retrieval", calls=[FindingCall(finding="pneumothorax", status=Status.present, score=0.9,
                                                                 score_kind="neighbor_fraction", source="retrieval")])

    prior = Prior()
    q = MultipleChoiceQuestion(question="Which?", options={"A": "Pneumothorax", "B": "Pleural effusion"},
                               images=[Path("x.png")])
    ans = _answerer(prior, Tool("classifier", {})).answer(q, thread_id="t")
    assert prior.requests and prior.requests[0].study is None and prior.requests[0].text == "Which?"
    # the classifier calls both absent; the neighbours' 90% only shifts the pneumothorax decision's confidence
    d = {x.finding: x for x in ans.decisions}
    assert d["pneumothorax"].status is Status.absent and d["pleural_effusion"].status is Status.absent
    alone = _answerer(prior).answer(q, thread_id="t2")
    assert alone.letter is None and alone.decided_by == "fallback"  # a prior alone decides nothing


def test_a_normal_option_is_judged_by_the_absence_of_every_finding_asked() -> None:
    q = MultipleChoiceQuestion(question="Which?", options={"A": "Pleural effusion", "B": "Pneumothorax",
                                                           "C": "Normal chest radiograph"}, images=[Path("x.png")])
    clear = Tool("classifier", {"pleural_effusion": 0.05, "pneumothorax": 0.05})
    ans = _answerer(clear).answer(q, thread_id="t")
    assert ans.letter == "C" and ans.decided_by == "tools"
    assert all("no_finding" not in r.findings for r in clear.requests)  # never asked as a finding
    sick = _answerer(Tool("classifier", {"pleural_effusion": 0.95, "pneumothorax": 0.05})).answer(q, thread_id="t")
    scores = {o.letter: o.score for o in sick.options}
    assert sick.letter == "A" and scores["C"] < 0.2


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
