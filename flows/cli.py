"""The `fitline` command line. Each command imports its implementation lazily, so that
`fitline predict` stays light (no torch, no prefect) and `--help` is instant."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="fitline: a reproducible training pipeline (DVC stages, Prefect flows, CI quality gates).",
    no_args_is_help=True,
    add_completion=False,
)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def repro(ctx: typer.Context) -> None:
    """Reproduce the pipeline: `dvc repro [ARGS]` with this venv's Python first on PATH.

    The stage commands (`python -m stages.<name>`) run with this venv's Python, activated or
    not. ARGS go to DVC: `fitline repro train`, `fitline repro -f`; `dvc repro --help` lists them.
    """
    import subprocess
    import sys

    from flows.stage_run import dvc_env

    raise typer.Exit(subprocess.call([sys.executable, "-m", "dvc", "repro", *ctx.args], env=dvc_env()))


def _announce(line: str) -> None:
    """Where a command says which Prefect server it uses: one line on stderr."""
    typer.echo(line, err=True)


server_app = typer.Typer(
    help="The local Prefect server that `fitline` commands share when PREFECT_API_URL is not set.",
    no_args_is_help=True,
)
app.add_typer(server_app, name="server")


def _server_call(fn):
    from flows.local_server import LocalServerError

    try:
        return fn()
    except LocalServerError as exc:
        typer.echo(f"fitline server: error: {exc}", err=True)
        raise typer.Exit(1) from None


@server_app.command("start")
def server_start() -> None:
    """Start the local server on 127.0.0.1 (PREFECT_SERVER_API_PORT, default 4200) unless it runs."""
    from flows.local_server import ensure_local_server

    typer.echo(_server_call(ensure_local_server).describe())


@server_app.command("status")
def server_status() -> None:
    """Say where the local server runs (starts nothing)."""
    from flows.local_server import local_server_status

    typer.echo(local_server_status())


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local server (the process of $PREFECT_HOME/server.pid)."""
    from flows.local_server import stop_local_server

    typer.echo(_server_call(stop_local_server))


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

    from stages.tools.gate import main as gate_main

    result, markdown = gate_main(baseline, Path(report) if report else None, Path(json_out) if json_out else None)
    typer.echo(markdown)
    raise typer.Exit(result.exit_code)


_MODEL_HELP = "exported model (default models/model.onnx; models/model.int8.onnx is the int8 one)"
_STAGE_HELP = "serve the version that holds this stage (`fitline promote --stage ...`), from the DVC cache"
_VERSION_HELP = "serve this registered version (e.g. v0.0.3; `fitline models` lists them)"


def _model_path(model: str | None, stage: str | None, version: str | None) -> str:
    """--model, or the ONNX file of the registered --stage / --version."""
    if (stage or version) and model:
        raise typer.BadParameter("give --model, or --stage / --version, not both")
    if stage or version:
        from stages.tools.registry import fetch_model

        return str(fetch_model(".", stage=stage, version=version))
    from stages.core.contracts import ONNX_PATH

    return model or str(ONNX_PATH)


def _run(name: str, fn) -> None:
    """One line and the error's exit code for an expected failure (stages.core.errors.run_main)."""
    from stages.core.errors import run_main

    run_main(fn, name)


@app.command()
def predict(
    input: str = typer.Option(..., "--input", metavar="FILE", help="rows to score (.parquet or .csv)"),  # noqa: A002
    output: str = typer.Option(..., "--output", metavar="FILE", help="where predictions go (.parquet or .csv)"),
    model: str = typer.Option(None, "--model", metavar="FILE", help=_MODEL_HELP),
    stage: str = typer.Option(None, "--stage", help=_STAGE_HELP),
    version: str = typer.Option(None, "--version", help=_VERSION_HELP),
) -> None:
    """Predict with an exported ONNX model using ONNX Runtime alone (no torch).

    Input: rows as in your original file, in any column order.
    Gaps, empty strings, unseen categories, booleans and dates are fine.
    A value that is not a number in a numeric column is an error naming both.

    Output: the input's other columns (ids, the target, ...) passed through,
    then `prediction` (regression) or `label` and `proba_<label>`.
    A prediction column whose name the input already has gets `_predicted`
    appended (`label` -> `label_predicted`): nothing is refused or overwritten.
    """
    from stages.serving.predict import predict_file

    _run("predict", lambda: predict_file(_model_path(model, stage, version), input, output))


@app.command("serve-model")
def serve_model(
    model: str = typer.Option(None, "--model", metavar="FILE", help=_MODEL_HELP),
    stage: str = typer.Option(None, "--stage", help=_STAGE_HELP),
    version: str = typer.Option(None, "--version", help=_VERSION_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (loopback by default)."),
    port: int = typer.Option(8080, "--port", min=1, max=65535),
    max_body_bytes: int = typer.Option(16 * 2**20, "--max-body-bytes", min=1, help="larger request bodies get 413."),
) -> None:
    """Serve the model over HTTP (MLflow's scoring protocol): POST /invocations, GET /health,
    /ping, /metadata. ONNX Runtime alone (no torch)."""
    from stages.serving.server import serve

    _run("serve-model", lambda: serve(_model_path(model, stage, version), host, port, max_body_bytes))


@app.command()
def monitor(
    input: str = typer.Option(..., "--input", metavar="FILE", help="a batch of new rows (.csv or .parquet)"),  # noqa: A002
    report: str = typer.Option(None, "--report", metavar="FILE", help="the JSON report (default reports/monitor.json)."),
    root: str = typer.Option(".", "--root", help="workspace with the train/test splits and models/model.onnx."),
) -> None:
    """Check a batch against the training data and the model's test predictions: exit 0 no drift,
    1 drift or invalid data (one line per problem), 2 cannot judge."""
    from stages.core.contracts import MONITOR_REPORT_PATH
    from stages.serving.monitor import run_monitor

    _run("monitor", lambda: run_monitor(input, report or MONITOR_REPORT_PATH, root))


@app.command()
def promote(
    stage: str = typer.Option("prod", "--stage", help="the stage the new version is assigned."),
    bump: str = typer.Option("patch", "--bump", help="patch | minor | major"),
) -> None:
    """Gate HEAD against the version that holds the stage; only when it passes, register a new
    version (GTO tag model@vX.Y.Z) and assign the stage. Exit 1: the gate refused (nothing
    tagged); 2: a dirty workspace, outputs off dvc.lock, or a gate that cannot judge."""
    from typing import get_args

    from stages.tools.registry import Bump, promote as do_promote

    if bump not in get_args(Bump):
        raise typer.BadParameter(f"--bump {bump!r}: use one of {', '.join(get_args(Bump))}")

    def go() -> None:
        version, _ = do_promote(".", stage, bump)
        typer.echo(f"model@{version} holds {stage}")

    _run("promote", go)


@app.command()
def models() -> None:
    """Registered versions, newest first: their stages, commit and test metrics."""
    from stages.tools.registry import versions

    def show() -> None:
        rows = versions(".")
        if not rows:
            typer.echo("no registered versions (`fitline promote --stage prod` registers one)")
        for v in rows:
            shown = ", ".join(f"{k} {x:.4g}" for k, x in v.metrics.items())
            typer.echo(f"{v.version:10} {','.join(v.stages) or '-':12} {v.commit[:10]}  {v.created}  {shown}")

    _run("models", show)


@app.command()
def run(
    root: str = typer.Option(".", "--root", help="DVC workspace to run in."),
    retries: int = typer.Option(2, "--retries", min=0, help="retries of a stage after a transient failure."),
    retry_delay: float = typer.Option(5.0, "--retry-delay", min=0, help="first retry delay in seconds (doubles)."),
    lock_timeout: float = typer.Option(600.0, "--lock-timeout", min=0,
                                       help="seconds to wait for another flow run on this workspace."),
    pull: bool = typer.Option(False, "--pull", help="dvc pull from the default DVC remote before the run."),
    push: bool = typer.Option(False, "--push", help="dvc push to the default DVC remote after the run."),
) -> None:
    """Run the pipeline as a Prefect flow (the same as `python -m flows.pipeline`)."""
    from flows.pipeline import run_pipeline
    from stages.core.errors import FitlineError

    try:
        run_pipeline(root, retries, retry_delay, lock_timeout, pull=pull, push=push, announce=_announce)
    except FitlineError as exc:
        typer.echo(f"fitline run: error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def history(
    metric: list[str] = typer.Option(None, "--metric", "-m",
                                     help="metric (or prefix, e.g. eval.test) to show; repeatable. "
                                          "Default: the metrics params `gate` judges."),
    every: bool = typer.Option(False, "--every", help="every numeric metric (a wide table)."),
    all_runs: bool = typer.Option(False, "--all", help="every run, not only the latest run of each commit."),
    root: str = typer.Option(".", "--root", help="project whose params.yaml names the gate's metrics."),
) -> None:
    """Metrics per commit, oldest to newest, read back from the Prefect API (artifact fitline-metrics)."""
    from flows.history import default_columns, format_history, per_commit, read_history
    from flows.local_server import prefect_api
    from stages.core.errors import FitlineError

    try:
        with prefect_api(_announce):
            entries = read_history()
    except FitlineError as exc:
        typer.echo(f"fitline history: error: {exc}", err=True)
        raise typer.Exit(1) from None
    if not all_runs:
        entries = per_commit(entries)
    columns = metric or (None if every else default_columns(entries, root))
    typer.echo(format_history(entries, columns))


@app.command()
def serve(
    cron: str = typer.Option("0 2 * * *", "--cron", help="cron schedule (UTC) of the pipeline runs."),
    name: str = typer.Option("fitline-nightly", "--name", help="deployment name."),
    root: str = typer.Option(".", "--root", help="DVC workspace the runs use."),
    retries: int = typer.Option(2, "--retries", min=0, help="retries of a stage after a transient failure."),
) -> None:
    """Serve the pipeline on a cron schedule from this process (PREFECT_API_URL's server, else the local one)."""
    from flows.pipeline import serve_pipeline
    from stages.core.errors import FitlineError

    try:
        serve_pipeline(root=root, cron=cron, name=name, retries=retries, announce=_announce)
    except FitlineError as exc:
        typer.echo(f"fitline serve: error: {exc}", err=True)
        raise typer.Exit(1) from None


_RUNNER_HELP = "threads | processes | dask (default: params sweep.runner)."


def _echo_applied(changed: dict) -> None:
    """What `--apply` of a sweep or a study changed in params.yaml."""
    if changed:
        changes = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        typer.echo(f"params.yaml: {changes}; run `dvc repro` to train the official model")
    else:
        typer.echo("params.yaml already holds the best values")


@app.command()
def sweep(
    apply: bool = typer.Option(False, "--apply", help="write the best trial's values into params.yaml (comments kept)."),
    workers: int = typer.Option(None, "--workers", min=1, help="trials at once (default: params sweep.workers)."),
    runner: str = typer.Option(None, "--runner", help=_RUNNER_HELP),
    dask_address: str = typer.Option(None, "--dask-address", metavar="ADDR",
                                     help="run the trials on the Dask scheduler at ADDR (implies --runner dask)."),
    root: str = typer.Option(".", "--root", help="project workspace (params.yaml, validated data/)."),
    top: int = typer.Option(10, "--top", min=1, help="leaderboard rows to print."),
) -> None:
    """Grid search over params `sweep.grid`: a cached Prefect task per trial; reports/sweep.csv."""
    from flows.sweep import leaderboard_text, run_sweep
    from stages.core.errors import FitlineError

    try:
        result = run_sweep(root, runner=runner, workers=workers, dask_address=dask_address, apply=apply,
                           announce=_announce)
    except FitlineError as exc:
        typer.echo(f"fitline sweep: error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(leaderboard_text(result, top))
    if apply:
        _echo_applied(result.changed)


@app.command()
def tune(
    trials: int = typer.Option(None, "--trials",
                               help="the study's budget of finished trials (default: params tune.trials)."),
    timeout: float = typer.Option(None, "--timeout", metavar="S", help="no new trial starts after S seconds."),
    apply: bool = typer.Option(False, "--apply", help="write the best trial's values into params.yaml."),
    workers: int = typer.Option(None, "--workers", help="trials at once (default: params sweep.workers)."),
    runner: str = typer.Option(None, "--runner", help=_RUNNER_HELP),
    root: str = typer.Option(".", "--root", help="project workspace (params.yaml, validated data/)."),
    top: int = typer.Option(10, "--top", min=1, help="leaderboard rows to print."),
) -> None:
    """Optuna study (TPE, pruning) over params `tune.space`, continued up to --trials; reports/tune.csv.

    Exit 1: no trial completed; 2: bad params, options or data (nothing ran)."""
    from flows.sweep import leaderboard_text
    from flows.tune import run_tune
    from stages.core.errors import DataError, FitlineError, ParamsError

    try:
        result = run_tune(root, trials=trials, timeout=timeout, workers=workers, runner=runner, apply=apply,
                          announce=_announce)
    except FitlineError as exc:
        typer.echo(f"fitline tune: error: {exc}", err=True)
        raise typer.Exit(2 if isinstance(exc, (ParamsError, DataError)) else 1) from None
    typer.echo(leaderboard_text(result, top))
    if result.new:
        others = result.new - result.trained
        typer.echo(f"study {result.study}: {result.new} new trials ({result.trained} trained, {others} from "
                   f"the trial cache or refused before training), {len(result.rows)} in all")
    else:
        typer.echo(f"study {result.study}: already {len(result.rows)} finished trials, nothing to run "
                   "(a larger --trials continues it)")
    if apply:
        _echo_applied(result.changed)


@app.command()
def compare(
    workers: int = typer.Option(None, "--workers", min=1, help="trials at once (default: params sweep.workers)."),
    runner: str = typer.Option(None, "--runner", help=_RUNNER_HELP),
    dask_address: str = typer.Option(None, "--dask-address", metavar="ADDR",
                                     help="run the trials on the Dask scheduler at ADDR (implies --runner dask)."),
    root: str = typer.Option(".", "--root", help="project workspace (params.yaml, validated data/)."),
) -> None:
    """Compare the optimizers (params `sweep.compare`): reports/compare.md, .csv and .png."""
    from pathlib import Path

    from flows.compare import run_compare
    from stages.core.errors import FitlineError

    try:
        result = run_compare(root, runner=runner, workers=workers, dask_address=dask_address, announce=_announce)
    except FitlineError as exc:
        typer.echo(f"fitline compare: error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(result.markdown)
    typer.echo(f"{result.cached} of {result.trials} trials from cache; wrote "
               + ", ".join(str(p.relative_to(Path(root).resolve())) for p in result.files))
