"""Hyper-parameter sweeps: the grid, one trial's computation, the leaderboard, `--apply`.

Everything here is plain computation; flows/sweep.py runs the trials as Prefect tasks. A
trial is `train_model` + `evaluate_model` in-process on the validated data, summarised as a
small JSON-able dict (the model itself is dropped: a sweep compares configurations, and
`dvc repro` trains the official model once the best one is applied to params.yaml).

The leaderboard ranks trials by the validation loss the fit diagnosis judges: MSE for
regression, log loss for classification (lower is better). The test split is reported but
never used to choose.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import itertools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stages.core.code import TRIAL_CODE, code_digest
from stages.core.contracts import (
    PARAMS_PATH,
    SPLITS,
    SWEEP_LEADERBOARD_PATH,
    VALIDATION_REPORT_PATH,
    Meta,
)
from stages.core.errors import DataError, FitlineError, ParamsError
from stages.core.io import read_json, write_text
from stages.core.params import JUDGED_LOSS, EvaluateParams, TrainParams, merge_auto_errors, parse_params
from stages.data.splits import Split

log = logging.getLogger(__name__)

METRIC_KEYS = {"regression": ("mse", "rmse", "mae", "r2"),
               "classification": ("log_loss", "accuracy", "f1_macro", "roc_auc")}


# ------------------------------------------------------------------------------- the grid


def grid_trials(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, as {train key: value}, the first key slowest."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def trial_params(base: TrainParams, overrides: Mapping[str, Any]) -> TrainParams:
    """`base` with `overrides` (dotted keys for nested sections), validated like params.yaml."""
    raw = base.model_dump()
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise ParamsError(f"sweep: unknown train key {key!r}")
        node[leaf] = value
    try:
        return TrainParams.model_validate(raw)
    except ValidationError as exc:
        err = merge_auto_errors(exc.errors())[0]
        where = f"trial {format_overrides(overrides)}"
        if err["type"] == "value_error":
            raise ParamsError(f"{where}: {err['ctx']['error']}") from None
        key = ".".join(str(p) for p in err["loc"])
        raise ParamsError(f"{where}: train.{key}: {err['input']!r} is not allowed: {err['msg']}") from None


def format_value(value: Any) -> str:
    """A grid value as people write it in params.yaml: adam, 0.001, [64, 64], null."""
    return value if isinstance(value, str) else json.dumps(value)


def format_overrides(overrides: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={format_value(v)}" for k, v in overrides.items()) or "base"


# ------------------------------------------------------------------------------- the data


def check_validated(root: str | Path = ".") -> None:
    """Trials train only on data that passed the validate stage."""
    path = Path(root) / VALIDATION_REPORT_PATH
    hint = "run `dvc repro validate` first"
    if not path.exists():
        raise DataError(f"{VALIDATION_REPORT_PATH}: not found; the data has not been validated ({hint})")
    try:
        report = read_json(path)
    except DataError as exc:
        raise DataError(f"{exc} ({hint})") from None
    if report.get("success") is not True:
        raise DataError(f"{VALIDATION_REPORT_PATH}: the data failed validation; fix it and {hint}")


def torch_version() -> str:
    """torch.__version__, read from the installed package's metadata: a cached trial's key is
    computed without importing torch (about a second per process)."""
    return importlib.metadata.version("torch")


def trial_device(name: str) -> str:
    """The device type resolve_device gives for train.device `name`; without importing torch where
    the answer is known: cpu, or auto with a CPU-only torch build (a "+cpu" version has no CUDA)."""
    if name == "cpu" or (name == "auto" and torch_version().endswith("+cpu")):
        return "cpu"
    from stages.training.loop import resolve_device

    return resolve_device(name).type


def code_fingerprint() -> str:
    """Hash of the stage modules a trial runs, and of the torch version."""
    h = hashlib.sha256(torch_version().encode())
    h.update(code_digest(*TRIAL_CODE).encode())
    return h.hexdigest()


def trial_key(train: TrainParams, evaluate: EvaluateParams, data_key: str, code_key: str) -> str:
    """A trial's cache key: everything its result depends on."""
    # checkpoint_every changes no result; the device does (auto means cuda where there is one)
    head = {"train": train.model_dump(mode="json", exclude={"checkpoint_every"}),
            "evaluate": evaluate.model_dump(mode="json"), "data": data_key, "code": code_key,
            "device": trial_device(train.device)}
    return "trial-" + hashlib.sha256(json.dumps(head, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------- a trial


def _scalars(metrics: dict[str, Any], task: str) -> dict[str, Any]:
    return {k: metrics.get(k) for k in METRIC_KEYS[task]}


def trial_history(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's epoch records as a trial keeps them: losses and the seconds elapsed after each epoch."""
    elapsed, history = 0.0, []
    for rec in records:
        elapsed += rec["epoch_seconds"]
        history.append({"epoch": rec["epoch"], "train_loss": rec["train_loss"], "val_loss": rec["val_loss"],
                        "seconds": round(elapsed, 4)})
    return history


def run_trial(train: TrainParams, evaluate: EvaluateParams, splits: dict[str, Split],
              meta: Meta, on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration; a small JSON-able summary (no model).

    An expected failure (a diverging run, a device that is not here) is a result with
    status "failed" and its message, not an exception: one bad learning rate must not end a
    sweep. `on_epoch_end` gets each epoch's record (an exception it raises ends the trial).
    """
    from stages.evaluation.scoring import evaluate_model
    from stages.training.loop import train_model

    task = meta.task
    summary: dict[str, Any] = {"status": "ok", "error": None, "task": task, "loss": JUDGED_LOSS[task]}
    try:
        result = train_model(train, splits, meta, on_epoch_end=on_epoch_end)
        report = evaluate_model(evaluate, result.model, splits, meta, result.history,
                                restored_best=result.metrics["restored_best"])
    except FitlineError as exc:
        log.warning("trial failed: %s", exc)
        return {**summary, "status": "failed", "error": str(exc)}
    return {
        **summary,
        **{split: _scalars(report[split], task) for split in SPLITS if split in report},
        "verdict": report["fit"]["verdict"],
        "epochs": result.metrics["epochs_run"],
        "best_epoch": result.metrics["best_epoch"],
        "seconds": result.metrics["wall_seconds"],
        "history": trial_history(result.history),
    }


# --------------------------------------------------------------------------- leaderboard


def rank_value(trial: dict[str, Any]) -> float:
    """The validation loss a trial is ranked by (inf for a failed trial)."""
    if trial["status"] != "ok":
        return float("inf")
    return trial["val"][trial["loss"]]


# trials without a val loss: those stopped early by a tuner's pruner before those that failed
STATUS_ORDER = {"ok": 0, "pruned": 1, "failed": 2}


def rank_trials(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best first: lowest val loss, then the faster one; pruned, then failed trials last, in grid order."""
    order = sorted(range(len(trials)), key=lambda i: (rank_value(trials[i]), STATUS_ORDER.get(trials[i]["status"], 2),
                                                      trials[i].get("seconds") or 0.0, i))
    return [trials[i] for i in order]


def leaderboard_rows(ranked: list[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Flat rows, one per trial: rank, the grid keys, val and test metrics, verdict, epochs, seconds."""
    task = next((t["task"] for t in ranked), "regression")
    rows = []
    for rank, t in enumerate(ranked, start=1):
        row: dict[str, Any] = {"rank": rank}
        row.update({k: format_value(t["params"][k]) for k in keys})
        for split in ("val", "test"):
            row.update({f"{split}_{m}": (t.get(split) or {}).get(m) for m in METRIC_KEYS[task]})
        row.update({"verdict": t.get("verdict"), "epochs": t.get("epochs"), "seconds": t.get("seconds"),
                    "status": t["status"], "cached": t.get("cached", False), "error": t.get("error") or ""})
        rows.append(row)
    return rows


def leaderboard_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return buf.getvalue()


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown_table(rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as a markdown table (all columns, or the ones named)."""
    if not rows:
        return "(no rows)\n"
    cols = list(columns or rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_leaderboard(rows: list[dict[str, Any]], root: str | Path = ".", path: Path = SWEEP_LEADERBOARD_PATH) -> Path:
    path = Path(root) / path
    write_text(path, leaderboard_csv(rows))
    return path


# -------------------------------------------------------------------------------- --apply


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()  # round-trip: keeps comments, key order and flow styles
    y.width = 4096  # never re-wrap long lines
    y.indent(mapping=2, sequence=4, offset=2)  # params.yaml's list style: "  key:\n    - item"
    # new values in params.yaml's own spelling: null (not an empty value), floats with a dot
    y.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    y.representer.add_representer(float, lambda r, v: r.represent_scalar("tag:yaml.org,2002:float", _float_text(v)))
    return y


def _float_text(value: float) -> str:
    text = repr(float(value))
    mantissa, _, exp = text.partition("e")
    if exp and "." not in mantissa:  # 1e-05: PyYAML (YAML 1.1) would read it as a string
        text = f"{mantissa}.0e{exp}"
    return text


def _yaml_value(new: Any, old: Any) -> Any:
    """A sequence keeps the old one's flow style ([64, 64]); a new sequence is written flow style."""
    if isinstance(new, (list, tuple)):
        from ruamel.yaml.comments import CommentedSeq

        seq = CommentedSeq(list(new))
        if getattr(old, "fa", None) is None or old.fa.flow_style():
            seq.fa.set_flow_style()
        return seq
    return new


def apply_overrides(text: str, overrides: Mapping[str, Any], source: str = str(PARAMS_PATH)) -> str:
    """params.yaml's text with train keys set to `overrides`; comments, order and the other keys
    kept. The result is validated like any params.yaml (a ParamsError leaves the file alone)."""
    import yaml as pyyaml
    from ruamel.yaml.comments import CommentedMap

    y = _yaml()
    doc = y.load(text) or CommentedMap()
    if doc.get("train") is None:
        doc["train"] = CommentedMap()
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = doc["train"]
        for part in parents:
            if node.get(part) is None:
                node[part] = CommentedMap()
            node = node[part]
        node[leaf] = _yaml_value(value, node.get(leaf))
    buf = io.StringIO()
    y.dump(doc, buf)
    new_text = buf.getvalue()
    parse_params(pyyaml.safe_load(new_text), source)
    return new_text


def apply_best(params_path: str | Path, overrides: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Write the best trial's values into params.yaml (atomically); return {key: (old, new)} changed."""
    import yaml as pyyaml

    path = Path(params_path)
    text = path.read_text()
    if apply_overrides(text, {}, str(path)) != text:
        log.warning("%s: rewriting it changes more than the applied keys (its layout differs from the "
                    "2-space style ruamel.yaml writes); check `git diff %s`", path, path.name)
    old = (pyyaml.safe_load(text) or {}).get("train") or {}
    new_text = apply_overrides(text, overrides, str(path))
    new = (pyyaml.safe_load(new_text) or {}).get("train") or {}

    def lookup(section: dict[str, Any], key: str) -> Any:
        for part in key.split("."):
            section = section.get(part) if isinstance(section, dict) else None
        return section

    changed = {k: (lookup(old, k), lookup(new, k)) for k in overrides if lookup(old, k) != lookup(new, k)}
    if changed:
        write_text(path, new_text)
    return changed
