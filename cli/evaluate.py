"""`cxr-agent eval ...` commands: classification, grounding, report and routing metrics, and the
reconciler simulation. Each prints a rich table and, with --out, writes the full results as JSON.

Folder runs show a progress bar and resume: per-image results are appended to a JSONL cache keyed by
filename + a fingerprint of the settings and options (eval/cache.py), so a rerun skips finished images.
Heavy libraries are imported inside the commands so `cxr-agent --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(no_args_is_help=True)


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _console():
    from rich.console import Console

    return Console(width=160)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=_console(), transient=False)


def _load_images(folder: Path, labels: Path | None, limit: int | None, *, need_boxes: bool = False,
                 boxes_csv: Path | None = None) -> list[Any]:
    from eval.data import LabelsError, load_labels, load_nih_bbox

    try:
        images = load_labels(labels or folder, root=folder if labels is not None else None)
        if boxes_csv is not None:
            load_nih_bbox(boxes_csv, images)
    except (LabelsError, OSError) as exc:
        _fail(str(exc))
    if need_boxes:
        images = [im for im in images if im.boxes]
    if limit:
        images = images[:limit]
    if not images:
        _fail(f"no {'boxed ' if need_boxes else ''}images to evaluate in {folder}")
    return images


def _findings_option(findings: str | None, images: list[Any]) -> list[str]:
    from knowledge.vocabulary import FINDINGS, normalize

    if findings:
        out = []
        for name in findings.split(","):
            f = normalize(name)
            if f is None:
                _fail(f"unknown finding {name!r}; use a vocabulary name such as 'pleural_effusion'")
            out.append(f)
        return out
    labelled = {f for im in images for f, v in im.labels.items() if v in (0, 1)}
    return [f for f in FINDINGS if f in labelled and f != "no_finding"]


@app.command("classify")
def classify(
    folder: Annotated[Path, typer.Argument(help="Image folder with labels.csv (or give --labels).")],
    labels: Annotated[Path | None, typer.Option("--labels", help="A labels CSV (shared labels.csv format or one CheXpert-style column per label); image paths relative to FOLDER.")] = None,
    limit: int = typer.Option(None, "--limit", "-n", min=1, help="Evaluate only the first N images."),
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write all metrics and per-image results as JSON here.")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="Resume cache (JSONL; default <data dir>/eval/classify-cache.jsonl).")] = None,
    findings: str = typer.Option(None, "--findings", help="Comma-separated findings (default: every labelled one)."),
    vlm: bool = typer.Option(True, "--vlm/--no-vlm", help="Run the VLM (yes/no questions, report, re-ask)."),
    classifier: bool = typer.Option(True, "--classifier/--no-classifier", help="Run the classifier."),
    questions: bool = typer.Option(True, "--questions/--no-questions", help="Ask the VLM one yes/no question per finding."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Re-ask the VLM on each conflict and resolve() it."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Classifier batch size."),
) -> None:
    """Per-finding AUROC and F1 of the classifier, the VLM and the reconciled decisions."""
    from rich.table import Table

    from agents.reconciling.decide import Policy
    from cxr_agent.settings import get_settings
    from eval import classify as ev
    from eval import harness
    from eval.cache import ResultCache, fingerprint

    settings = get_settings()
    images = _load_images(folder, labels, limit)
    wanted = _findings_option(findings, images)
    key = fingerprint("classify", settings, folder=str(folder.resolve()), findings=wanted, vlm=vlm,
                      classifier=classifier, questions=questions, verify=verify)
    rc = ResultCache(cache or harness.default_cache(settings, "classify"), key)
    clf, vlm_tool = harness.make_tools(settings, use_vlm=vlm, use_classifier=classifier)
    with _progress() as progress:
        task = progress.add_task(f"classify ({len(images)} images)", total=len(images))
        results = ev.run_images(images, classifier=clf, vlm=vlm_tool, policy=Policy.from_settings(settings),
                                cache=rc, findings=wanted, load=harness.load_image, batch_size=batch_size,
                                vlm_questions=questions, verify=verify,
                                on_image=lambda _: progress.advance(task))
    metrics = ev.compute_metrics(images, results, wanted)
    table = Table(title=f"eval classify: {folder} ({metrics['n_images']} images, {metrics['n_errors']} with errors)",
                  caption=harness.caption(settings))
    for col in ("source", "macro AUROC", "macro F1", "micro P", "micro R", "micro F1", "F1 (unc.=pos)", "review"):
        table.add_column(col)
    for source, m in metrics["sources"].items():
        s = m["summary"]
        table.add_row(source, _fmt(s["macro_auroc"]), _fmt(s["macro_f1"]), _fmt(s["micro"]["precision"]),
                      _fmt(s["micro"]["recall"]), _fmt(s["micro"]["f1"]), _fmt(s["micro_f1_uncertain_positive"]),
                      _fmt(s.get("review_fraction")))
    _console().print(table)
    errors = [(f, e) for f, r in results.items() for e in r.get("errors", [])]
    for f, e in errors[:5]:
        typer.secho(f"  {f}: {e}", fg=typer.colors.YELLOW, err=True)
    harness.write_json(out, {"command": "classify", "folder": str(folder), "findings": wanted,
                             "demo": settings.is_demo, "fingerprint": key, "metrics": metrics, "per_image": results})


@app.command("ground")
def ground(
    folder: Annotated[Path, typer.Argument(help="Image folder with labels.csv (bbox column) or give --labels/--boxes.")],
    labels: Annotated[Path | None, typer.Option("--labels", help="A labels CSV; image paths relative to FOLDER.")] = None,
    boxes: Annotated[Path | None, typer.Option("--boxes", help="NIH BBox_List_2017.csv(.gz): reference boxes by image file name.")] = None,
    limit: int = typer.Option(None, "--limit", "-n", min=1, help="Evaluate only the first N boxed images."),
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write metrics and per-image boxes as JSON here.")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="Resume cache (default <data dir>/eval/ground-cache.jsonl).")] = None,
    vlm: bool = typer.Option(True, "--vlm/--no-vlm", help="Ask the VLM to locate each boxed finding."),
    classifier: bool = typer.Option(True, "--classifier/--no-classifier", help="Take the classifier heatmap box."),
) -> None:
    """IoU and mAP@0.5 of VLM boxes and classifier heatmap boxes against reference boxes."""
    from rich.table import Table

    from cxr_agent.settings import get_settings
    from eval import ground as ev
    from eval import harness
    from eval.cache import ResultCache, fingerprint

    settings = get_settings()
    images = _load_images(folder, labels, limit, need_boxes=True, boxes_csv=boxes)
    key = fingerprint("ground", settings, folder=str(folder.resolve()), vlm=vlm, classifier=classifier,
                      boxes=str(boxes) if boxes else None)
    rc = ResultCache(cache or harness.default_cache(settings, "ground"), key)
    clf, vlm_tool = harness.make_tools(settings, use_vlm=vlm, use_classifier=classifier)
    with _progress() as progress:
        task = progress.add_task(f"ground ({len(images)} images)", total=len(images))
        results = ev.run_images(images, vlm=vlm_tool, classifier=clf, cache=rc, load=harness.load_image,
                                on_image=lambda _: progress.advance(task))
    metrics = ev.compute_metrics(images, results)
    table = Table(title=f"eval ground: {folder} ({metrics['n_images']} images, {metrics['n_reference_boxes']} reference boxes)",
                  caption=harness.caption(settings), min_width=100)
    for col in ("source", "mean IoU", "mAP@0.5"):
        table.add_column(col)
    for source, m in metrics["sources"].items():
        if (source == "vlm" and not vlm) or (source == "classifier" and not classifier):
            continue
        table.add_row(source, _fmt(m["mean_iou"]), _fmt(m["map50"]))
    _console().print(table)
    harness.write_json(out, {"command": "ground", "folder": str(folder), "demo": settings.is_demo,
                             "fingerprint": key, "metrics": metrics, "per_image": results})


@app.command("report")
def report(
    refs: Annotated[Path, typer.Argument(help="Reference reports: CSV/JSONL with id,text (or MIMIC/CheXpert Plus columns) or a folder of .txt files.")],
    generated: Annotated[Path | None, typer.Option("--generated", "-g", help="Generated reports in the same formats, paired by id.")] = None,
    images: Annotated[Path | None, typer.Option("--images", help="Generate reports with the VLM from this image folder (id = file stem).")] = None,
    limit: int = typer.Option(None, "--limit", "-n", min=1, help="Only the first N reference reports."),
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write metrics (and generated reports) as JSON here.")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="Resume cache for --images (default <data dir>/eval/report-cache.jsonl).")] = None,
) -> None:
    """Label-based F1, BLEU-4 and ROUGE-L of generated reports against references."""
    from rich.table import Table

    from cxr_agent.settings import get_settings
    from eval import harness
    from eval.reports import compute_metrics, load_reports
    from tools.retrieval.corpus import CorpusError

    settings = get_settings()
    if (generated is None) == (images is None):
        _fail("give exactly one of --generated PATH (reports to score) or --images FOLDER (generate them with the VLM)")
    try:
        references = load_reports(refs, limit=limit)
        gen = load_reports(generated) if generated is not None else _generate(settings, images, references, cache)
    except CorpusError as exc:
        _fail(str(exc))
    metrics = compute_metrics(references, gen)
    table = Table(title=f"eval report: {metrics['n_pairs']} pairs ({metrics['missing']} references without a generated report)",
                  caption=harness.caption(settings) if images is not None else None)
    for col in ("metric", "value"):
        table.add_column(col)
    if metrics["n_pairs"]:
        for name, v in (("label micro F1", metrics["label_micro"]["f1"]), ("label micro precision", metrics["label_micro"]["precision"]),
                        ("label micro recall", metrics["label_micro"]["recall"]), ("label macro F1", metrics["label_macro_f1"]),
                        ("BLEU-4 (0-100)", metrics["bleu4"]), ("ROUGE-L F", metrics["rouge_l"])):
            table.add_row(name, _fmt(v))
    _console().print(table)
    harness.write_json(out, {"command": "report", "refs": str(refs), "metrics": metrics,
                             "generated": gen if images is not None else None})


def _generate(settings: Any, folder: Path, references: dict[str, str], cache: Path | None) -> dict[str, str]:
    """VLM reports for the images in `folder` whose stem is a reference id (resumable)."""
    from eval import harness
    from eval.cache import ResultCache, fingerprint
    from tools.base import ToolRequest

    files = {p.stem: p for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.suffix.lower() in
             {".png", ".jpg", ".jpeg", ".dcm", ".dicom"}}
    todo = [i for i in references if i in files]
    if not todo:
        _fail(f"no image in {folder} has a file name (stem) matching a reference id")
    key = fingerprint("report", settings, folder=str(Path(folder).resolve()))
    rc = ResultCache(cache or harness.default_cache(settings, "report"), key)
    _, vlm = harness.make_tools(settings, use_vlm=True, use_classifier=False)
    out: dict[str, str] = {}
    with _progress() as progress:
        task = progress.add_task(f"generate ({len(todo)} reports)", total=len(todo))
        for rid in todo:
            if rid not in rc:
                try:
                    ev = vlm.run(ToolRequest(intent="report", study=harness.load_image(files[rid])))
                except Exception as exc:
                    typer.secho(f"  {rid}: {type(exc).__name__}: {exc}", fg=typer.colors.YELLOW, err=True)
                    ev = None
                if ev is not None and ev.ok and ev.report:
                    rc.add(rid, ev.report)
                elif ev is not None:
                    typer.secho(f"  {rid}: {ev.error}", fg=typer.colors.YELLOW, err=True)
            if rid in rc:
                out[rid] = rc.get(rid)
            progress.advance(task)
    return out


@app.command("route")
def route_cmd(
    cases: Annotated[Path | None, typer.Argument(help="JSONL of {text, intent, (finding), (has_image)} (default eval/router_cases.jsonl).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the full result (confusion, errors) as JSON here.")] = None,
    router: Annotated[str, typer.Option("--router", help="semantic (the product's default: rules + embedding "
                                        "classifier) or rules (the rules alone).")] = "semantic",
) -> None:
    """Accuracy, asking-back rate and confusion matrix of the router on labelled turns (whole turns, as the graph
    routes them; a turn it asks back about is counted apart, neither right nor wrong)."""
    from rich.table import Table

    from eval import harness
    from eval.route_eval import evaluate_cases

    if router not in ("semantic", "rules"):
        _fail(f"--router must be 'semantic' or 'rules', not {router!r}")
    from agents.routing import route, route_semantic

    try:
        res = evaluate_cases(cases, router=route_semantic if router == "semantic" else route)
    except (OSError, ValueError, KeyError) as exc:
        _fail(f"cannot read the cases: {exc}")
    console = _console()
    summary = Table(title=f"eval route: {res['n']} cases")
    for col in ("metric", "value"):
        summary.add_column(col)
    for k in ("accuracy", "intent_accuracy", "finding_accuracy", "clarify_rate"):
        summary.add_row(k, _fmt(res[k]))
    for split, acc in res.get("per_split", {}).items():
        summary.add_row(f"accuracy ({split})", _fmt(acc))
    console.print(summary)
    conf = Table(title="confusion (rows: gold intent, columns: routed intent)")
    conf.add_column("gold \\ routed")
    for lab in res["labels"]:
        conf.add_column(lab)
    for lab, row in zip(res["labels"], res["matrix"], strict=True):
        conf.add_row(lab, *(str(v) if v else "." for v in row))
    console.print(conf)
    for e in res["errors"][:10]:
        console.print(f"  miss: {e['text']!r} gold={e['gold']} got={e['got']}")
    harness.write_json(out, {"command": "route", "cases": str(cases) if cases else "eval/router_cases.jsonl", **res})


@app.command("simulate")
def simulate(
    seed: int = typer.Option(0, "--seed", help="Random seed (runs are deterministic per seed)."),
    iu_limit: int = typer.Option(None, "--iu-limit", min=0, help="Use only the first N IU reports (0: NIH only; default all)."),
    nih_labels: Annotated[Path | None, typer.Option("--nih-labels", help="NIH labels.csv (default: the shared data's nih_cxr14/labels.csv).")] = None,
    profile: Annotated[list[str] | None, typer.Option("--profile", "-p", help="Run only this profile (repeatable); see eval/simulate.py PROFILES.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write every profile's metrics as JSON here.")] = None,
    with_classification: Annotated[bool, typer.Option(
        "--with-classification", help="The simulated VLM also answers RadVLM's abnormality classification "
        "beside its report, as the graph asks it (see eval/simulate.py).")] = False,
    changes: Annotated[bool, typer.Option(
        "--changes", help="Also simulate pairs of films: the change rule vs each source alone under the error "
        "models of eval/compare_simulate.py.")] = False,
    pairs: int = typer.Option(300, "--pairs", min=1, help="Simulated pairs per change profile (with --changes)."),
) -> None:
    """Weight-free check of the reconciler: simulated VLM and classifier with known error profiles."""
    from rich.table import Table

    from eval import harness
    from eval import simulate as sim

    profiles = [p for p in sim.PROFILES if not profile or p.name in profile]
    if not profiles:
        _fail(f"unknown profile(s) {profile}; choose from {', '.join(p.name for p in sim.PROFILES)}")
    if with_classification:
        from dataclasses import replace

        profiles = [replace(p, vlm_classification=True) for p in profiles]
    cases = sim.nih_cases(nih_labels) if nih_labels else []
    if nih_labels is None:
        cases = sim.default_cases(iu_limit=iu_limit)
    elif iu_limit != 0:
        cases += sim.iu_cases(iu_limit)
    if not cases:
        _fail("no ground-truth cases (NIH labels.csv not found and the IU reports are turned off)")
    results = sim.run_all(cases, profiles, seed=seed)
    console = _console()
    for res in results:
        console.print(render_simulation(res, Table))
    for key in results[0]["verdict"]:
        lost = [r["profile"]["name"] for r in results if not r["verdict"][key]["beats_best_single"]]
        console.print(f"{key}: the policy loses to the better single source in "
                      f"{', '.join(lost) if lost else 'no profile'} ({len(lost)}/{len(results)} profiles)")
    change_results: list[dict[str, Any]] = []
    if changes:
        from eval import compare_simulate as csim

        change_results = csim.run_all(n_pairs=pairs, seed=seed)
        for res in change_results:
            console.print(render_change_simulation(res, Table))
    harness.write_json(out, {"command": "simulate", "seed": seed, "n_cases": len(cases), "profiles": results,
                             **({"change_profiles": change_results} if changes else {})})


@app.command("compare")
def compare_cmd(
    pairs: Annotated[Path, typer.Argument(help="Pairs file: the documented CSV (current, prior, one change column per "
                                          "finding id), MS-CXR-T's temporal image classification CSV or CheXTemporal's "
                                          "gold_progression_pairs (parquet or CSV); see eval/compare.py.")],
    images: Annotated[Path | None, typer.Option("--images", help="Root the image paths are relative to (default: the "
                                                "pairs file's folder; MIMIC-CXR-JPG's root for MS-CXR-T).")] = None,
    limit: int = typer.Option(None, "--limit", "-n", min=1, help="Evaluate only the first N pairs."),
    vlm: bool = typer.Option(False, "--vlm/--no-vlm", help="Also run the VLM's report on each film (a statement "
                             "source that cannot compare)."),
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the metrics and confusion matrix as JSON here.")] = None,
) -> None:
    """Per-finding change accuracy and a confusion matrix of the change rule on labelled pairs of films."""
    from rich.table import Table

    from cxr_agent.settings import get_settings
    from eval import compare as ev
    from eval import harness

    try:
        pair_set = ev.read_pairs(pairs, images)
    except ev.PairsError as exc:
        _fail(str(exc))
    if limit:
        pair_set.pairs = pair_set.pairs[:limit]
    settings = get_settings()
    clf, vlm_tool = harness.make_tools(settings, use_vlm=vlm, use_classifier=True)
    predict = ev.tool_predictor([t for t in (clf, vlm_tool) if t is not None])
    with _progress() as progress:
        task = progress.add_task(f"compare ({len(pair_set.pairs)} pairs)", total=len(pair_set.pairs))
        res = ev.evaluate(pair_set, predict, on_pair=lambda: progress.advance(task))
    console = _console()
    table = Table(title=f"eval compare: {pairs} ({res['format']}, {res['n_pairs']} pairs, {res['n_labels']} labels, "
                        f"accuracy {_fmt(res['accuracy'])}, macro {_fmt(res['macro_accuracy'])})",
                  caption=harness.caption(settings))
    for col in ("finding", "accuracy", "n"):
        table.add_column(col)
    for f, m in res["per_finding"].items():
        table.add_row(f, _fmt(m["accuracy"]), str(m["n"]))
    console.print(table)
    cm = Table(title="confusion (rows: gold, columns: decided)" + (" - new counted as worse, resolved as improved"
                                                                   if res["collapsed"] else ""))
    cm.add_column("gold")
    for col in res["confusion"]["columns"]:
        cm.add_column(col)
    for gold, row in res["confusion"]["matrix"].items():
        cm.add_row(gold, *(str(row[c]) for c in res["confusion"]["columns"]))
    console.print(cm)
    if res["unmapped"]:
        console.print(f"left out (no vocabulary finding): {res['unmapped']}")
    for e in res["failed"][:5]:
        typer.secho(f"  {e['pair']}: {e['error']}", fg=typer.colors.YELLOW, err=True)
    harness.write_json(out, {"command": "compare", "pairs": str(pairs), "demo": settings.is_demo, **res})


def render_change_simulation(res: dict[str, Any], table_cls: Any) -> Any:
    """One rich table per change profile: each variant's accuracy, coverage and false-change rate."""
    table = table_cls(title=f"simulate changes ({res['profile']['name']}): {res['n_pairs']} pairs, "
                            f"{res['n_labels']} findings, review {res['review_fraction']:.3f}")
    for col in ("source", "accuracy", "coverage", "acc. decided", "change recall", "false change"):
        table.add_column(col)
    for v, m in res["metrics"].items():
        table.add_row(v, _fmt(m["accuracy"]), _fmt(m["coverage"]), _fmt(m["accuracy_decided"]),
                      _fmt(m["change_recall"]), _fmt(m["false_change_rate"]))
    v = res["verdict"]
    table.caption = (f"policy {v['policy_accuracy']:.3f} {'BEATS' if v['beats_best_single'] else 'DOES NOT BEAT'} "
                     f"{v['best_single']} {v['best_single_accuracy']:.3f}")
    return table


def render_simulation(res: dict[str, Any], table_cls: Any) -> Any:
    """One rich table per profile: P/R/F1 of each source and of the policy, plus the verdict caption."""
    m = res["metrics"]
    table = table_cls(title=f"simulate ({res['profile']['name']}): {res['n_cases']} cases, {res['n_pairs']} pairs, "
                            f"prevalence {res['prevalence']:.3f}, conflicts {res['n_conflicts']} "
                            f"(resolved by re-ask {res['n_resolved_by_reask']})")
    for col in ("source", "P", "R", "F1", "P (unc.=pos)", "R (unc.=pos)", "F1 (unc.=pos)", "review pairs", "review cases"):
        table.add_column(col)
    for v, mm in m.items():
        a, b = mm["uncertain_negative"], mm["uncertain_positive"]
        table.add_row(v, _fmt(a["precision"]), _fmt(a["recall"]), _fmt(a["f1"]), _fmt(b["precision"]),
                      _fmt(b["recall"]), _fmt(b["f1"]), _fmt(mm.get("review_fraction_pairs")),
                      _fmt(mm.get("review_fraction_cases")))
    lines = []
    for k, v in res["verdict"].items():
        word = "BEATS" if v["beats_best_single"] else "LOSES TO"
        lines.append(f"{k}: F1 {v['f1']:.3f} {word} {v['best_single']} {v['best_single_f1']:.3f} ({v['delta']:+.3f})")
    table.caption = "\n".join(lines)
    return table


def _mcq_graph(settings: Any) -> Any:
    """The graph whose tools answer the benchmark (tests swap in one over test tools)."""
    from graph import build_graph

    return build_graph(settings, checkpointer=False)


@app.command("mcq")
def mcq(
    bench: Annotated[str, typer.Argument(help="chestagentbench or rexvqa.")],
    path: Annotated[Path, typer.Argument(help="ChestAgentBench: the folder with metadata.jsonl and figures/. "
                                              "ReXVQA: its *_vqa_data.json (or the folder holding it).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Results JSONL (appended; a rerun skips done ids). "
                                             "Default: mcq-<bench>-<tools>.jsonl in the data dir.")] = None,
    tools: Annotated[str | None, typer.Option("--tools", help="Ablation: comma-separated tools (default: all).")] = None,
    thread_per: Annotated[str, typer.Option("--thread-per", help="question (default: a fresh thread each) or case "
                                            "(one thread per case, earlier questions as history: labelled in results).")] = "question",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N questions.")] = None,
    sample: Annotated[int | None, typer.Option("--sample", min=1, help="N questions drawn at random (seeded).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --sample.")] = 0,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Questions at once (capped by the VLM "
                                             "backend: 1 in process, the tool pool for a served VLM).")] = 1,
    images_root: Annotated[Path | None, typer.Option("--images-root", help="ReXVQA: where ImagePath is relative to.")] = None,
) -> None:
    """Answer a multiple-choice benchmark, one fresh thread per question, without the router."""
    from cxr_agent.settings import get_settings
    from eval.mcq import adapters, runner
    from eval.mcq.stats import summarize

    if thread_per not in ("question", "case"):
        _fail(f"--thread-per must be 'question' or 'case', got {thread_per!r}")
    try:
        items = adapters.load(bench, path, images_root=images_root)
    except (adapters.BenchFormatError, OSError) as exc:
        _fail(str(exc))
    settings = get_settings()
    graph = _mcq_graph(settings)
    try:
        answerer, names = runner.answerer_for(graph, tools.split(",") if tools else None)
    except runner.RunConfigError as exc:
        _fail(str(exc))
    items = runner.choose(items, limit=limit, sample=sample, seed=seed)
    out = out or Path(settings.data_dir) / f"mcq-{bench}-{'+'.join(names)}{'-case' if thread_per == 'case' else ''}.jsonl"
    config = runner.RunConfig(bench=bench, tools=names, thread_per=thread_per,  # type: ignore[arg-type]
                              profile=settings.model_profile)
    workers = min(concurrency, runner.max_concurrency(settings))
    done = {r["id"] for r in runner.read_rows(out)}
    todo = sum(1 for it in items if it.id not in done)
    console = _console()
    if thread_per == "case":
        console.print("[bold yellow]thread per case: questions of a case share one thread and see earlier "
                      "answers; not comparable with published per-question numbers[/]")
    with _progress() as progress:
        task = progress.add_task(f"{bench} ({'+'.join(names)})", total=todo)
        try:
            runner.run(items, answerer, config, out, concurrency=workers, on_done=lambda _r: progress.advance(task))
        except runner.RunConfigError as exc:
            _fail(str(exc))
    ids = {it.id for it in items}
    s = summarize([r for r in runner.read_rows(out) if r["id"] in ids])
    o = s["overall"]
    console.print(f"{bench}: {o['n']} questions, accuracy {o['accuracy']:.3f} [{o['ci95'][0]:.3f}, {o['ci95'][1]:.3f}], "
                  f"coverage {o['coverage']:.3f}, status {s['status']}, bias floor {s['bias_floor']['accuracy']:.3f} "
                  f"(always {s['bias_floor']['letter']}); tool calls {s['tool_calls']}")
    console.print(f"results: {out}")


@app.command("mcq-report")
def mcq_report(
    results: Annotated[list[Path], typer.Argument(help="Results JSONL files of `eval mcq` (one per ablation arm).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML page to write (the Markdown table goes beside it, .md).")] = Path("mcq-report.html"),
) -> None:
    """A self-contained HTML report and a Markdown table of one or more `eval mcq` runs."""
    from eval.mcq import report, runner
    from eval.mcq.stats import summarize

    summaries = []
    for p in results:
        rows = runner.read_rows(p)
        if not rows:
            _fail(f"{p}: no results in it")
        summaries.append(summarize(rows))
    benches = {str(s["config"].get("bench")) for s in summaries}
    note = ("Demo profile: tiny random models; these numbers have no value."
            if any(s["config"].get("profile") == "tiny" for s in summaries) else "")
    title = f"Multiple-choice benchmark: {', '.join(sorted(benches))}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.html_page(summaries, title=title, note=note), encoding="utf-8")
    md = out.with_suffix(".md")
    md.write_text(report.markdown(summaries, title=title), encoding="utf-8")
    _console().print(report.markdown(summaries, title=title))
    _console().print(f"wrote {out} and {md}")


@app.command("agreement")
def agreement_cmd(
    file: Annotated[Path, typer.Argument(help="JSONL written by `cxr-agent review export`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for agreement.json and agreement.png (and "
                                      "agreement-changes.json / .png when rows carry a change since a prior).")
                   ] = Path("agreement"),
) -> None:
    """Per-finding agreement of the AI draft with readers' signed results (kappa, AI sensitivity/specificity),
    and of the AI's change since the prior with the signed change where a study was compared."""
    import json

    from rich.table import Table

    from eval.agreement import (
        CAVEAT,
        AgreementError,
        agreement,
        change_agreement,
        changes_to_json,
        plot,
        plot_changes,
        read_rows,
        to_json,
    )

    try:
        rows = read_rows(file)
    except AgreementError as exc:
        _fail(str(exc))
    results, changes = agreement(rows), change_agreement(rows)
    table = Table(title="AI draft vs signed result, per finding")
    for col in ("finding", "n", "kappa", "sensitivity", "specificity", "changed"):
        table.add_column(col)
    for r in results:
        table.add_row(r.finding, str(r.n), _fmt(r.kappa), _fmt(r.sensitivity), _fmt(r.specificity), str(r.changed))
    out.mkdir(parents=True, exist_ok=True)
    (out / "agreement.json").write_text(json.dumps(to_json(results), indent=2), encoding="utf-8")
    png = plot(results, out / "agreement.png")
    console = _console()
    console.print(table)
    written = [str(out / "agreement.json"), str(png)]
    change_files = (out / "agreement-changes.json", out / "agreement-changes.png")
    if changes:
        ctable = Table(title="Change since the prior: AI vs signed")
        for col in ("finding", "n", "kappa", "changed", "flagged"):
            ctable.add_column(col)
        for c in changes:
            ctable.add_row(c.finding, str(c.n), _fmt(c.kappa), str(c.changed), str(c.flagged))
        change_files[0].write_text(json.dumps(changes_to_json(changes), indent=2), encoding="utf-8")
        written += [str(change_files[0]), str(plot_changes(changes, change_files[1]))]
        console.print(ctable)
        console.print("The AI's 'cannot compare' is a category of its own; a rejected change counts as 'no change "
                      "signed'.")
    else:  # an earlier run's change table does not describe this file
        for stale in change_files:
            stale.unlink(missing_ok=True)
    console.print(f"[yellow]{CAVEAT}[/yellow]")
    console.print(f"wrote {', '.join(written[:-1])} and {written[-1]}")
