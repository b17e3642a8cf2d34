"""The `cxr-agent` command. Sub-commands live in their own modules and import heavy libraries lazily."""

from __future__ import annotations

import typer

from cli.evaluate import app as eval_app
from cli.forget import register as register_forget
from cli.kb import app as kb_app
from cli.models import app as models_app
from cli.pacs import app as pacs_app
from cli.review import app as review_app
from cli.router import app as router_app
from cli.run import register as register_run_commands
from cli.setup import setup as setup_command

app = typer.Typer(help="cxr-agent: chest X-ray decision-support assistant (research use, not a diagnosis).", no_args_is_help=True)
app.add_typer(kb_app, name="kb", help="Build, inspect and search the prior-report index.")
app.add_typer(models_app, name="models", help="List and download model weights.")
app.add_typer(eval_app, name="eval", help="Evaluate tools and the reconciled graph on labelled data.")
app.add_typer(pacs_app, name="pacs", help="Pull a study from a PACS (DICOMweb) and push the DICOM SR back.")
app.add_typer(review_app, name="review", help="Review, sign and send a conversation's findings as a clinician.")
app.add_typer(router_app, name="router", help="Build the fine-tuned router model; say which intent classifier routes.")
register_run_commands(app)  # ui, ask
app.command("setup")(setup_command)  # demo models + prior-report index, once
register_forget(app)  # forget

if __name__ == "__main__":
    app()
