"""Tune against grid, same budget: `fitline sweep` and `fitline tune` with the same number of trials.

On each data set two grids over lr x reg_strength and the Optuna study (`tune.space`: the same
two keys as log ranges, TPE, the median pruner) get the same number of trials, 2 at a time,
the project's default train params otherwise. The grids: "by hand", log-spaced points around
the values an earlier sweep of the default data found best (an informed grid: it favours the
synthetic data), and "spanning", log-spaced from end to end of the tune space's ranges (the
grid one writes knowing only the ranges). The study runs with several sampler seeds (TPE is random; one seed
tells little). Reported per run: the best val loss (what both rank by), the test metric of
the trial each picks, the wall time, the epochs trained in all (a cost that does not depend
on what else the machine runs) and the trials pruned.

Data sets: the default synthetic data (friedman, 20,000 rows) and one public table
(`--table`, default credit_data: 4,454 rows, classification, text columns and gaps), written
to CSV by the scratch Python exactly as benchmarks/real_tables.py does (see its docstring for
the scratch venv). Each run gets its own workspace (fresh trial cache, fresh study); the data
is validated once per data set by the validate stage itself.

    PYTHONPATH=. .venv/bin/python benchmarks/tune_vs_grid.py                       # 12 trials, 3 seeds
    PYTHONPATH=. .venv/bin/python benchmarks/tune_vs_grid.py --trials 6 --seeds 42 --rows 5000

The Prefect API is a temporary test server in this process (nothing is left running).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads crawl on a busy CPU
# Prefect reads its settings when first imported: a throwaway home, never the user's ~/.prefect
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="fitline-bench-prefect-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)

import argparse
import itertools
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.real_tables import TABLES, export_tables
from stages.core.params import parse_params
from stages.generate import run as generate
from stages.tools.sweep import markdown_table

# the grid: log-spaced points inside the tune space below, the sizes multiply to the budget
GRID_LRS = {4: (0.0003, 0.001, 0.003, 0.01), 3: (0.0003, 0.002, 0.01), 2: (0.001, 0.01)}
GRID_REGS = {3: (0.00001, 0.0001, 0.001), 2: (0.0001, 0.001), 1: (0.001,)}
SPACE = {"lr": {"low": 0.0001, "high": 0.03, "log": True}, "reg_strength": {"low": 0.00001, "high": 0.01, "log": True}}
WORKERS = 2
ROOT = Path(__file__).resolve().parents[1]


def grid_for(trials: int, spanning: bool = False) -> dict[str, tuple[float, ...]]:
    """lr x reg_strength with exactly `trials` points (12 = 4 x 3, 6 = 3 x 2, 4 = 2 x 2, ...): the
    points by hand, or (`spanning`) log-spaced from end to end of the tune space's ranges."""
    for n_lr, n_reg in itertools.product(sorted(GRID_LRS, reverse=True), sorted(GRID_REGS, reverse=True)):
        if n_lr * n_reg == trials:
            if not spanning:
                return {"lr": GRID_LRS[n_lr], "reg_strength": GRID_REGS[n_reg]}
            return {key: tuple(float(f"{v:.2g}") for v in np.geomspace(SPACE[key]["low"], SPACE[key]["high"], n))
                    for key, n in (("lr", n_lr), ("reg_strength", n_reg))}
    raise SystemExit(f"--trials {trials}: the grid needs a product of (4|3|2) lrs x (3|2|1) reg_strengths")


def base_workspace(dest: Path, data: dict[str, Any], trials: int) -> Path:
    """params.yaml (data, grid, space), the generated data and the validate stage's own report."""
    dest.mkdir(parents=True)
    params = {"data": data, "sweep": {"grid": {k: list(v) for k, v in grid_for(trials).items()}, "workers": WORKERS},
              "tune": {"trials": trials, "space": SPACE}}
    parse_params(params)  # fail here, not in a run
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    generate(parse_params(params).data, dest / "data")
    proc = subprocess.run([sys.executable, "-m", "stages.validate"], cwd=dest, capture_output=True, text=True,
                          env={**os.environ, "GX_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(ROOT)}, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"validate failed on {dest}:\n{proc.stderr[-2000:]}")
    return dest


def copy_workspace(base: Path, dest: Path, seed: int | None = None) -> Path:
    shutil.copytree(base, dest, ignore=shutil.ignore_patterns(".dvc"))
    if seed is not None:
        raw = yaml.safe_load((dest / "params.yaml").read_text())
        raw["tune"]["sampler_seed"] = seed
        (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest


def summarise(method: str, seed: int | None, result: Any, seconds: float) -> dict[str, Any]:
    best = result.best
    task = best["task"]
    test_key = "r2" if task == "regression" else "accuracy"
    return {"method": method, "seed": seed, "trials": len(result.trials), "loss": best["loss"],
            "best_val": best["val"][best["loss"]], "test": best["test"][test_key], "test_key": test_key,
            "lr": best["params"]["lr"], "reg_strength": best["params"]["reg_strength"],
            "seconds": seconds, "epochs": sum(t.get("epochs") or 0 for t in result.trials),
            "pruned": sum(t["status"] == "pruned" for t in result.trials)}


def run_dataset(name: str, data: dict[str, Any], trials: int, seeds: list[int], work: Path) -> list[dict[str, Any]]:
    from flows.sweep import run_sweep
    from flows.tune import run_tune

    base = base_workspace(work / name / "base", data, trials)
    runs = []
    for method, spanning in (("grid by hand", False), ("grid spanning", True)):
        t0 = time.perf_counter()
        result = run_sweep(copy_workspace(base, work / name / method.replace(" ", "-")), workers=WORKERS,
                           grid=grid_for(trials, spanning))
        runs.append(summarise(method, None, result, time.perf_counter() - t0))
    for seed in seeds:
        t0 = time.perf_counter()
        result = run_tune(copy_workspace(base, work / name / f"tune-{seed}", seed), workers=WORKERS)
        runs.append(summarise("tune", seed, result, time.perf_counter() - t0))
    for r in runs:
        r["data"] = name
        print(f"{name} {r['method']} seed={r['seed']}: best val {r['loss']} {r['best_val']:.4g}, "
              f"test {r['test_key']} {r['test']:.4g}, {r['seconds']:.1f} s, {r['epochs']} epochs, "
              f"{r['pruned']} pruned", flush=True)
    return runs


def markdown(runs: list[dict[str, Any]]) -> str:
    rows = [{"data": r["data"], "method": r["method"], "sampler seed": r["seed"], "trials": r["trials"],
             "best val loss": f"{r['loss']} {r['best_val']:.4f}", "test of the best": f"{r['test_key']} {r['test']:.4f}",
             "lr": f"{r['lr']:.3g}", "reg_strength": f"{r['reg_strength']:.2g}", "wall s": f"{r['seconds']:.0f}",
             "epochs trained": r["epochs"], "pruned": r["pruned"]} for r in runs]
    return markdown_table(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=12, help="the budget of each method")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="tune.sampler_seed of each study")
    ap.add_argument("--rows", type=int, default=20000, help="rows of the synthetic data")
    ap.add_argument("--table", default="credit_data", choices=sorted(TABLES), help="the public table")
    ap.add_argument("--sklearn-python", default="/tmp/skl/bin/python", help="the scratch Python with the tables")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory(prefix="fitline-tune-vs-grid-") as tmp, \
            prefect_test_harness(server_startup_timeout=120):
        work = Path(tmp)
        export_tables(args.sklearn_python, [args.table], work)
        table = TABLES[args.table]
        runs = run_dataset("friedman", {"kind": "friedman", "n_samples": args.rows}, args.trials, args.seeds, work)
        runs += run_dataset(args.table, {"source": "file", "path": str(work / f"{args.table}.csv"),
                                         "target": table.target}, args.trials, args.seeds, work)
    print()
    print(markdown(runs))


if __name__ == "__main__":
    main()
