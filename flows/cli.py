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


@app.command()
def gate(
    baseline: str = typer.Option(
        None, "--baseline", metavar="REV",
        help="git revision whose committed metrics are the baseline for regression rules (e.g. origin/main).",
    ),
    report: str = typer.Option(None, "--report", metavar="FILE", help="write the markdown report here."),
    json_out: str = typer.Option(None, "--json", metavar="FILE", help="write the JSON result here."),
) -> None:
    """Judge the model's metrics against params `gate`: exit 0 passed, 1 a rule failed, 2 cannot judge."""
    from pathlib import Path

    from stages.gate import main as gate_main

    result, markdown = gate_main(baseline, Path(report) if report else None, Path(json_out) if json_out else None)
    typer.echo(markdown)
    raise typer.Exit(result.exit_code)


@app.command()
def predict(
    model: str = typer.Option(..., "--model", metavar="FILE", help="exported model, e.g. models/model.int8.onnx"),
    input: str = typer.Option(..., "--input", metavar="FILE", help="rows to score (.parquet or .csv)"),  # noqa: A002
    output: str = typer.Option(..., "--output", metavar="FILE", help="where predictions go (.parquet or .csv)"),
) -> None:
    """Predict with an exported ONNX model using ONNX Runtime alone (no torch).

    Output: the input's non-feature columns (ids, the target) passed through, then `prediction`
    (regression) or `label` and `proba_<label>` (classification).
    """
    from stages.predict import main as predict_main

    predict_main(model, input, output)
