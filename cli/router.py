"""`cxr-agent router ...`: build the fine-tuned router model and say which intent classifier routes.

SetFit (the `router-train` extra) is imported only by `train`; `info` needs only what routing needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("train")
def train(
    out: Annotated[Path | None, typer.Option(help="Where to write the model (default: <data_dir>/router-model).")] = None,
    examples: Annotated[Path | None, typer.Option(help="Labelled turns, JSONL of text and intent "
                                                          "(default: the bundled ones).")] = None,
    iterations: Annotated[int | None, typer.Option(min=1, help="Contrastive pairs drawn per labelled turn "
                                                                  "(default 4).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Passes over the pairs (default 1).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Pairs per training step (default 32).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0).")] = None,
    base: Annotated[Path | None, typer.Option(help="A saved sentence-transformer to fine-tune "
                                                   "(default: the bundled MiniLM).")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch threads: 1 is fastest on a CPU shared with other work "
                                                     "(measured 1.3 s a step against 30 s with 2 on 2 busy cores)")] = 1,
) -> None:
    """Fine-tune the bundled MiniLM on the labelled turns (SetFit) and save the router model (CPU, minutes)."""
    import torch

    from agents.routing import finetune, router_model
    from cxr_agent.settings import get_settings

    target = out or router_model.model_dir(get_settings().data_dir)
    kw = {k: v for k, v in {"iterations": iterations, "epochs": epochs, "batch_size": batch_size,
                            "seed": seed, "base": base}.items() if v is not None}
    if examples is not None and not examples.is_file():
        typer.echo(f"--examples: no examples file at {examples}", err=True)
        raise typer.Exit(2)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        meta = finetune.train_router_model(target, examples_path=examples, **kw)
    except ImportError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    except ValueError as exc:
        typer.echo(f"cannot train the router model: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        torch.set_num_threads(before)
    typer.echo(f"router model written to {target} in {meta['train_seconds']} s "
               f"({meta['n_examples']} examples, sha256 {meta['examples_sha256'][:12]})")


@app.command("info")
def info(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Which intent classifier the semantic router uses here, and why not the fine-tuned model if not."""
    from agents.routing import router_model
    from agents.routing.semantic import classifier_info
    from cxr_agent.settings import get_settings

    row: dict[str, object] = {"model_dir": str(router_model.model_dir(get_settings().data_dir)), **classifier_info()}
    if as_json:
        typer.echo(json.dumps(row))
        return
    typer.echo(f"intent classifier: {row['classifier'] or 'none (routing by rules only)'}")
    if row["fallback_reason"]:
        typer.echo(f"not the fine-tuned model: {row['fallback_reason']}")
    if row["error"]:
        typer.echo(f"unavailable: {row['error']}")
