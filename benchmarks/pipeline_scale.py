"""The whole pipeline at growing data sizes: wall time, CPU time and peak RSS of every stage.

    .venv/bin/python benchmarks/pipeline_scale.py                      # 100k, 1M, 10M rows x 20 features
    .venv/bin/python benchmarks/pipeline_scale.py --rows 100000 1000000 --json scale.json
    .venv/bin/python benchmarks/pipeline_scale.py --small    # 1,000 rows, default params, before vs after

`--small` is the small-table point (benchmarks/small_table.py): the real default run on 1,000 rows,
each stage's wall split into interpreter start, imports and work, the code of a git revision
(`--before`) against the working tree, interleaved repeats, plus the whole cold `dvc repro`.

For each size: a temporary copy of the project (stages/, dvc.yaml, params.yaml with the data
size set), then each stage's command from dvc.yaml (generate, validate, train, evaluate, export),
run as a child process in that copy and measured by os.wait4: wall seconds, CPU seconds (user +
system; the shared machine's load swings the wall clock) and peak RSS. DVC itself is not run
(its hashing of the outputs is not a stage's cost). Training runs a fixed `--epochs` (default 1,
early stopping off, no checkpoints): 200 epochs of 7M rows is not a benchmark. Prints one table
per size as it goes, then the growth of each stage from one size to the next: time per million
rows and peak RSS against the data's in-memory size (rows x (features + 1) x 4 bytes of float32).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import small_table  # a sibling script, not a package

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("generate", "validate", "train", "evaluate", "export")


def scale_params(rows: int, features: int, epochs: int, kind: str) -> dict[str, Any]:
    """The project's params.yaml with the data size and a short, fixed training run."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(kind=kind, n_samples=rows, n_features=features, n_informative=min(5, features))
    params["train"].update(epochs=epochs, warmup_epochs=0, checkpoint_every=epochs + 1,
                           early_stopping={"patience": None, "min_delta": 0.0})
    return params


def make_copy(dest: Path, params: dict[str, Any]) -> Path:
    shutil.copytree(ROOT / "stages", dest / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "dvc.yaml", dest / "dvc.yaml")
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def stage_commands() -> dict[str, str]:
    """Each stage's command, as dvc.yaml runs it (the one source of truth for the stages)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stages[name]["cmd"] for name in STAGES}


def measure(cmd: str, cwd: Path, log_path: Path) -> dict[str, float]:
    """Run `cmd` in a shell in `cwd`; wall, CPU and peak RSS of it and its descendants."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(cwd), "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    with open(log_path, "w") as log:
        t = time.perf_counter()
        proc = subprocess.Popen(["bash", "-c", cmd], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"`{cmd}` failed with exit {proc.returncode} in {cwd}:\n{tail}")
    # ru_maxrss (KiB) covers the shell and every process it waited for: the stage's python
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024}


def run_size(rows: int, features: int, epochs: int, kind: str, keep: Path | None) -> dict[str, Any]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"pipeline-scale-{rows}-", dir=keep))
    try:
        work = make_copy(tmp, scale_params(rows, features, epochs, kind))
        result: dict[str, Any] = {"rows": rows, "features": features, "epochs": epochs,
                                  "data_mib": rows * (features + 1) * 4 / 2**20, "stages": {}}
        for name, cmd in stage_commands().items():
            m = measure(cmd, work, tmp / f"{name}.log")
            result["stages"][name] = m
            print(f"  {rows:>11,} {name:<9} wall {m['wall_s']:8.1f} s  cpu {m['cpu_s']:8.1f} s  "
                  f"peak RSS {m['rss_mib']:8.0f} MiB", flush=True)
        result["parquet_mib"] = sum(p.stat().st_size for p in (work / "data").glob("*.parquet")) / 2**20
        return result
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: one row per stage and size."""
    lines = ["| rows | stage | wall s | CPU s | CPU µs/row | peak RSS MiB | RSS / data |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in results:
        for name, m in r["stages"].items():
            lines.append(f"| {r['rows']:,} | {name} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} | "
                         f"{m['cpu_s'] / r['rows'] * 1e6:.2f} | {m['rss_mib']:.0f} | {m['rss_mib'] / r['data_mib']:.1f} |")
    return "\n".join(lines)


def growth(results: list[dict[str, Any]]) -> str:
    """From each size to the next: CPU time ratio and the RSS increase per MiB of added data.

    Linear time gives a CPU ratio equal to the rows ratio; a memory slope (ΔRSS / Δdata) that
    stays flat means memory is a fixed multiple of the data plus a constant (imports)."""
    lines = ["| stage | rows | CPU time × (rows ×) | ΔRSS / Δdata |", "|---|---|---:|---:|"]
    for a, b in zip(results, results[1:]):
        for name in a["stages"]:
            ma, mb = a["stages"][name], b["stages"][name]
            cpu = mb["cpu_s"] / ma["cpu_s"] if ma["cpu_s"] > 0 else float("nan")
            slope = (mb["rss_mib"] - ma["rss_mib"]) / (b["data_mib"] - a["data_mib"])
            lines.append(f"| {name} | {a['rows']:,} → {b['rows']:,} | {cpu:.1f} ({b['rows'] / a['rows']:.0f}) | {slope:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1, help="training epochs (fixed; early stopping off)")
    parser.add_argument("--kind", default="friedman", choices=["friedman", "linear", "classification"])
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--keep", type=Path, help="keep each size's copy (data, models, logs) under this folder")
    parser.add_argument("--small", action="store_true", help="the small-table point instead (small_table.py)")
    small_table.add_arguments(parser)
    args = parser.parse_args()
    if args.small:
        small_table.report(args, args.keep, args.json)
        return

    results = []
    for rows in args.rows:
        print(f"{rows:,} rows x {args.features} features ({args.kind}), {args.epochs} training epoch(s):", flush=True)
        results.append(run_size(rows, args.features, args.epochs, args.kind, args.keep))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    if len(results) > 1:
        print()
        print(growth(results))


if __name__ == "__main__":
    main()
