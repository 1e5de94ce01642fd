"""How long the validate stage takes on big data, and where the time goes.

    .venv/bin/python benchmarks/validate_scale.py [--rows 1000000] [--features 20] [--kind friedman]
    .venv/bin/python benchmarks/validate_scale.py --rows 1000 --columns 10,100,1000,10000 [--timeout 600]

One point (no --columns): generates the data with the real generate stage (in a child process)
into a temporary folder, then measures, in this process: the GX import, reading the splits, the
validation work (`stages.validate.run`, with its parts: train reference statistics, row hashing)
and building the Data Docs, and this process's peak RSS; and, in a fresh subprocess, the whole
stage (`python -m stages.validate`): wall time, CPU and peak RSS.

The columns axis (--columns): one fresh subprocess per point (so each peak RSS is that point's
own), each measuring the same things as one point without the whole-stage run; a point that
runs past --timeout is cut off and reported as such. `read s` is reading the three splits, `run s`
the validation (stages.validate.run), `docs s` building the Data Docs, `validate s` the two.
--reader whole-file reads the same frames as the stage's reader with the file's metadata parsed
once (the stage's reader parses it once per column). Nothing is written outside the temporary
folders.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def read_whole_file(split: str, data_dir: Path) -> pd.DataFrame:
    """A split as read_split_frame gives it (one column at a time), with the file's metadata
    parsed once rather than once per column (which costs time quadratic in the columns)."""
    from stages.data.splits import split_path

    file = pq.ParquetFile(split_path(split, data_dir))
    index = {c for c in (file.schema_arrow.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
    names = [n for n in file.schema_arrow.names if n not in index]
    return pd.concat([file.read(columns=[n], use_pandas_metadata=True).to_pandas() for n in names], axis=1)


def generate_data(rows: int, features: int, kind: str, data_dir: Path) -> None:
    """The real generate stage, in a child process: this one's peak RSS is then reading and
    validating alone."""
    code = ("from stages import generate; from stages.core.params import DataParams; "
            f"generate.run(DataParams(kind={kind!r}, n_samples={rows}, n_features={features}, "
            f"n_informative={min(5, features)}, noise={0.1 if kind == 'classification' else 1.0}), "
            f"{str(data_dir)!r})")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def measure(rows: int, features: int, kind: str, work: Path, reader: str = "stage") -> dict:
    """Generate one dataset into `work` and time each part of validating it, in this process."""
    from stages.core.contracts import SPLITS, load_meta
    from stages.core.params import ValidateParams
    from stages.data.splits import read_split_frame

    read = read_split_frame if reader == "stage" else read_whole_file

    t = time.perf_counter()
    generate_data(rows, features, kind, work / "data")
    meta = load_meta(work / "data")
    out = {"rows": rows, "columns": features, "kind": kind, "split_rows": meta.rows,
           "generate_s": time.perf_counter() - t, "rss_before_read_mib": peak_rss_mib()}

    t, cpu = time.perf_counter(), time.process_time()
    from stages import validate
    from stages.validation import checks, expectations
    from stages.validation import gx as gx_checks
    from stages.validation import report as validation_report
    out["import_s"], out["import_cpu_s"] = time.perf_counter() - t, time.process_time() - cpu

    t = time.perf_counter()
    frames = {s: read(s, work / "data") for s in SPLITS}
    out["read_s"] = time.perf_counter() - t

    params = ValidateParams()
    t = time.perf_counter()
    expectations.reference_stats(params, frames["train"], meta)
    out["reference_s"] = time.perf_counter() - t
    t = time.perf_counter()
    columns = [*meta.feature_names, meta.target]
    for s in SPLITS:
        checks.row_hashes(frames[s], columns)
    out["hash_s"] = time.perf_counter() - t

    context = gx_checks.make_context(work / "data_docs")
    t, cpu = time.perf_counter(), time.process_time()
    report = validate.run(params, frames, meta, context)
    out["run_s"], out["run_cpu_s"] = time.perf_counter() - t, time.process_time() - cpu
    t = time.perf_counter()
    context.build_data_docs()
    out["docs_s"] = time.perf_counter() - t
    out["validate_s"] = out["run_s"] + out["docs_s"]
    out["success"] = report["success"]
    out["checks"] = sum(v["checks"] for v in report["splits"].values())
    out["failed"] = report["failed_checks"]
    out["failure_lines"] = validation_report.failure_lines(report)[:20]
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def one_point(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="validate-scale-") as tmp:
        work = Path(tmp)
        m = measure(args.rows, args.features, args.kind, work, args.reader)
        if args.json:
            print(json.dumps(m))
            return
        print(f"data: {m['rows']} rows x {m['columns']} features ({m['kind']}), rows {m['split_rows']}, "
              f"generated in {m['generate_s']:.1f} s")
        print(f"import stages.validate (GX)     {m['import_s']:6.2f} s   (CPU {m['import_cpu_s']:.2f} s)")
        print(f"read splits                     {m['read_s']:6.2f} s")
        print(f"validation work (run)           {m['run_s']:6.2f} s   (CPU {m['run_cpu_s']:.2f} s) "
              f"success={m['success']}, checks {m['checks']}")
        print(f"  train reference (alone)       {m['reference_s']:6.2f} s")
        print(f"  row hashing (alone)           {m['hash_s']:6.2f} s")
        print(f"build Data Docs                 {m['docs_s']:6.2f} s")
        print(f"peak RSS of this process        {m['peak_rss_mib']:6.0f} MiB "
              f"(before reading: {m['rss_before_read_mib']:.0f} MiB; data generated in a child process)")
        print("\n".join(m["failure_lines"]))
        if args.no_subprocess:
            return
        (work / "params.yaml").write_text("validate: {}\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        t = time.perf_counter()
        with tempfile.TemporaryFile("w+") as stderr:
            # wait4: this child's own rusage (RUSAGE_CHILDREN would include the generate child)
            proc = subprocess.Popen([sys.executable, "-m", "stages.validate"], cwd=work, env=env,
                                    stdout=subprocess.DEVNULL, stderr=stderr, text=True)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - t
            stderr.seek(0)
            errors = stderr.read()
        print(f"whole stage (python -m stages.validate): exit {proc.returncode}, wall {wall:.2f} s, "
              f"CPU {usage.ru_utime + usage.ru_stime:.2f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MiB")
        if proc.returncode:
            print(errors[-3000:])


def columns_axis(args: argparse.Namespace) -> None:
    """Each point in its own process; a point past --timeout is cut off."""
    print(f"{'rows':>8} {'columns':>8} {'checks':>7} {'read s':>8} {'run s':>8} {'docs s':>8} {'validate s':>11} "
          f"{'peak RSS MiB':>13}  verdict")
    for n in [int(c) for c in args.columns.split(",")]:
        cmd = [sys.executable, __file__, "--rows", str(args.rows), "--features", str(n),
               "--kind", args.kind, "--reader", args.reader, "--json"]
        t = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
        except subprocess.TimeoutExpired:
            print(f"{args.rows:>8} {n:>8} {'-':>7} {'-':>8} {'-':>8} {'-':>8} {'>' + str(args.timeout):>11} "
                  f"{'-':>13}  cut off after {time.perf_counter() - t:.0f} s")
            continue
        if proc.returncode:
            print(f"{args.rows:>8} {n:>8} failed: {proc.stderr[-2000:]}")
            continue
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{m['rows']:>8} {m['columns']:>8} {m['checks']:>7} {m['read_s']:>8.2f} {m['run_s']:>8.2f} {m['docs_s']:>8.2f} "
              f"{m['validate_s']:>11.2f} {m['peak_rss_mib']:>13.0f}  "
              f"{'pass' if m['success'] else str(m['failed']) + ' failed'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--columns", help="comma-separated feature counts: the columns axis, one process each")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per point on the columns axis")
    parser.add_argument("--kind", default="friedman", choices=["friedman", "linear", "classification"])
    parser.add_argument("--reader", default="stage", choices=["stage", "whole-file"],
                        help="stage: read_split_frame; whole-file: the same frame, the file's metadata parsed once")
    parser.add_argument("--no-subprocess", action="store_true", help="skip the whole-stage subprocess run")
    parser.add_argument("--json", action="store_true", help="one point, as one JSON line (no whole-stage run)")
    args = parser.parse_args()
    if args.columns:
        columns_axis(args)
    else:
        one_point(args)


if __name__ == "__main__":
    main()
