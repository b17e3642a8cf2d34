"""The report of one or more results files (ablation arms): a self-contained HTML page (plots inlined
as base64 PNGs, no network) and a Markdown table fit for a paper."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from eval.mcq.stats import arm_name

_PCT = "{:.1%}".format


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return '<img alt="plot" src="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode() + '">'


def _plots(summaries: list[dict[str, Any]]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [arm_name(s) for s in summaries]
    out: dict[str, str] = {}
    # ablation bars: accuracy with its CI per arm, the bias floor as a line
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(names)), 3))
    acc = [s["overall"]["accuracy"] for s in summaries]
    err = [[a - s["overall"]["ci95"][0] for a, s in zip(acc, summaries, strict=True)],
           [s["overall"]["ci95"][1] - a for a, s in zip(acc, summaries, strict=True)]]
    ax.bar(names, acc, yerr=err, capsize=4, color="#4c72b0")
    ax.axhline(summaries[0]["bias_floor"]["accuracy"], ls="--", color="#c44e52", label="bias floor")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.legend()
    ax.tick_params(axis="x", rotation=20)
    out["ablation"] = _png(fig)
    # per category, per arm
    cats = sorted({c for s in summaries for c in s["categories"]})
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(cats) * len(names)), 3))
    width = 0.8 / len(summaries)
    for i, s in enumerate(summaries):
        xs = [j + i * width for j in range(len(cats))]
        ys = [s["categories"].get(c, {}).get("accuracy", 0.0) for c in cats]
        lo = [y - s["categories"].get(c, {}).get("ci95", [y, y])[0] for c, y in zip(cats, ys, strict=True)]
        hi = [s["categories"].get(c, {}).get("ci95", [y, y])[1] - y for c, y in zip(cats, ys, strict=True)]
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=names[i])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cats))], cats, rotation=20)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.legend(fontsize=7)
    out["categories"] = _png(fig)
    # calibration of the reconciled confidence (first arm with any tool decisions)
    fig, ax = plt.subplots(figsize=(3.5, 3.5))
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    for s, n in zip(summaries, names, strict=True):
        b = s["calibration"]["bins"]
        if b:
            ax.plot([x["confidence"] for x in b], [x["accuracy"] for x in b], marker="o", label=n)
    ax.set_xlabel("reconciled confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    out["calibration"] = _png(fig)
    return out


def _confusion_table(s: dict[str, Any]) -> str:
    cols = sorted({p for row in s["confusion"].values() for p in row}, key=lambda x: (x == "-", x))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr><th>" + html.escape(g) + "</th>" + "".join(f"<td>{row.get(c, 0)}</td>" for c in cols)
                   + "</tr>" for g, row in s["confusion"].items())
    return f"<table><tr><th>gold \\ ours</th>{head}</tr>{body}</table><p class=note>- : not answered</p>"


def markdown(summaries: list[dict[str, Any]], title: str = "Multiple-choice accuracy") -> str:
    """One row per arm: accuracy [95% CI], coverage, selective accuracy, per category, bias floor."""
    cats = sorted({c for s in summaries for c in s["categories"]})
    head = ["Tools", "n", "Accuracy [95% CI]", "Coverage", "Selective acc.", *cats, "Bias floor"]
    lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        o = s["overall"]
        cells = [arm_name(s), str(o["n"]), f"{_PCT(o['accuracy'])} [{_PCT(o['ci95'][0])}, {_PCT(o['ci95'][1])}]",
                 _PCT(o["coverage"]), "-" if o["selective_accuracy"] is None else _PCT(o["selective_accuracy"])]
        for c in cats:
            a = s["categories"].get(c)
            cells.append("-" if a is None else f"{_PCT(a['accuracy'])} (n={a['n']})")
        cells.append(f"{_PCT(s['bias_floor']['accuracy'])} ({s['bias_floor']['letter']})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Accuracy counts every question (abstentions, skipped non-radiograph figures and errors are "
              "wrong); coverage is the share answered; the bias floor always answers the most common gold letter."]
    return "\n".join(lines) + "\n"


def html_page(summaries: list[dict[str, Any]], *, title: str = "Multiple-choice benchmark", note: str = "") -> str:
    """A page that opens offline: tables, the letter distributions and confusion, inlined plots."""
    plots = _plots(summaries)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if note:
        parts.append(f"<p class=warn>{html.escape(note)}</p>")
    parts.append("<h2>Accuracy by arm</h2>" + plots["ablation"])
    parts.append("<h2>Per category</h2>" + plots["categories"])
    for s in summaries:
        o = s["overall"]
        st = s["status"]
        parts.append(f"<h2>{html.escape(arm_name(s))}</h2><table>"
                     f"<tr><th>questions</th><td>{o['n']}</td></tr>"
                     f"<tr><th>accuracy [95% CI]</th><td>{_PCT(o['accuracy'])} [{_PCT(o['ci95'][0])}, "
                     f"{_PCT(o['ci95'][1])}]</td></tr>"
                     f"<tr><th>coverage</th><td>{_PCT(o['coverage'])}</td></tr>"
                     f"<tr><th>answered / abstained / skipped / errors</th><td>{st['answered']} / {st['abstained']} / "
                     f"{st['skipped']} / {st['error']}</td></tr>"
                     f"<tr><th>decided by</th><td>{html.escape(str(s['decided_by']))}</td></tr>"
                     f"<tr><th>bias floor (always {html.escape(s['bias_floor']['letter'])})</th>"
                     f"<td>{_PCT(s['bias_floor']['accuracy'])}</td></tr>"
                     f"<tr><th>gold letters</th><td>{html.escape(str(s['gold_letters']))}</td></tr>"
                     f"<tr><th>our letters</th><td>{html.escape(str(s['predicted_letters']))}</td></tr>"
                     f"<tr><th>tool calls</th><td>{html.escape(str(s['tool_calls']))}</td></tr>"
                     f"<tr><th>threads</th><td>{s['threads']['distinct']} for {s['threads']['answered_questions']} "
                     f"questions ({html.escape(str(s['config'].get('thread_per', 'question')))})</td></tr>"
                     "</table><h3>Letter confusion</h3>" + _confusion_table(s))
        c = s["calibration"]
        parts.append(f"<p>Calibration of the reconciled confidence on {c['n']} tool-decided questions: ECE "
                     f"{'-' if c['ece'] is None else format(c['ece'], '.3f')}.</p>")
    parts.append("<h2>Calibration</h2>" + plots["calibration"])
    parts.append("<h2>Markdown</h2><pre>" + html.escape(markdown(summaries)) + "</pre>")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.warn{color:#a00;font-weight:bold}"
             ".note{color:#666;font-size:small}")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>" + "\n".join(parts) + "</body></html>\n")
