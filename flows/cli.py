"""The `fitline` command line. Each command imports its implementation lazily, so that
`fitline predict` stays light (no torch, no prefect) and `--help` is instant."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="fitline: a reproducible training pipeline (DVC stages, Prefect flows, CI quality gates).",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def repro() -> None:
    """Reproduce the pipeline with DVC (the same as `dvc repro`)."""
    import subprocess
    import sys

    raise typer.Exit(subprocess.call([sys.executable, "-m", "dvc", "repro"]))


# Commands of later stages are added below, one function each, importing lazily.
