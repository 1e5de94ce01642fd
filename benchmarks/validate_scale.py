"""How long the validate stage takes on big data, and where the time goes.

    .venv/bin/python benchmarks/validate_scale.py [--rows 1000000] [--features 20] [--kind friedman]

Generates the data with the real generate stage into a temporary folder, then measures, in
this process: the GX import, reading the splits, the validation work (`stages.validate.run`, with
its parts: train reference statistics, row hashing, each split's GX suite) and building the Data
Docs; and, in a fresh subprocess, the whole stage (`python -m stages.validate`): wall time and
peak RSS. Nothing is written outside the temporary folder.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stages.validation import checks
from stages.validation import gx as gx_checks

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--kind", default="friedman", choices=["friedman", "linear", "classification"])
    parser.add_argument("--no-subprocess", action="store_true", help="skip the whole-stage subprocess run")
    args = parser.parse_args()

    from stages import generate
    from stages.core.contracts import SPLITS
    from stages.core.params import DataParams, ValidateParams
    from stages.data.splits import read_split_frame

    with tempfile.TemporaryDirectory(prefix="validate-scale-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        meta = generate.run(DataParams(kind=args.kind, n_samples=args.rows, n_features=args.features,
                                       n_informative=min(5, args.features),
                                       noise=0.1 if args.kind == "classification" else 1.0),
                            work / "data")
        print(f"data: {args.rows} rows x {args.features} features ({args.kind}), rows {meta['rows']}, "
              f"generated in {time.perf_counter() - t:.1f} s")
        rss_before = peak_rss_mib()

        t, cpu = time.perf_counter(), time.process_time()
        from stages import validate
        from stages.validation import expectations
        from stages.validation import report as validation_report
        t_import, cpu_import = time.perf_counter() - t, time.process_time() - cpu

        t = time.perf_counter()
        frames = {s: read_split_frame(s, work / "data") for s in SPLITS}
        t_read = time.perf_counter() - t

        params = ValidateParams()
        t = time.perf_counter()
        expectations.reference_stats(params, frames["train"], meta)
        t_refs = time.perf_counter() - t
        t = time.perf_counter()
        columns = [*meta["feature_names"], meta["target"]]
        for s in SPLITS:
            checks.row_hashes(frames[s], columns)
        t_hash = time.perf_counter() - t

        context = gx_checks.make_context(work / "data_docs")
        t, cpu = time.perf_counter(), time.process_time()
        report = validate.run(params, frames, meta, context)
        t_run, cpu_run = time.perf_counter() - t, time.process_time() - cpu
        t = time.perf_counter()
        context.build_data_docs()
        t_docs = time.perf_counter() - t

        print(f"import stages.validate (GX)     {t_import:6.2f} s   (CPU {cpu_import:.2f} s)")
        print(f"read splits                     {t_read:6.2f} s")
        print(f"validation work (run)           {t_run:6.2f} s   (CPU {cpu_run:.2f} s) success={report['success']}, "
              f"expectations {sum(v['checks'] for v in report['splits'].values())}")
        print(f"  of which train reference      {t_refs:6.2f} s")
        print(f"  of which row hashing          {t_hash:6.2f} s")
        print(f"build Data Docs                 {t_docs:6.2f} s")
        print(f"peak RSS of this process        {peak_rss_mib():6.0f} MiB (after generating: {rss_before:.0f} MiB)")
        if not report["success"]:
            print("\n".join(validation_report.failure_lines(report)))

        if args.no_subprocess:
            return
        (work / "params.yaml").write_text("validate: {}\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "stages.validate"], cwd=work, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t
        child = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"whole stage (python -m stages.validate): exit {proc.returncode}, wall {wall:.2f} s, "
              f"CPU {child.ru_utime + child.ru_stime:.2f} s, peak RSS {child.ru_maxrss / 1024:.0f} MiB")
        if proc.returncode:
            print(proc.stderr[-3000:])


if __name__ == "__main__":
    main()
