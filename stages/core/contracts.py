"""The files stages exchange: every path the pipeline reads or writes, relative to the workspace
root, and the typed readers and writers of the ones several modules share.

No other module spells a path: dvc.yaml, the stages, the tools and the flows all name these
files, so a path changes here or nowhere (tests/core/test_contracts.py compares this list with
dvc.yaml's outputs).
"""

from __future__ import annotations

import csv
import hashlib
import json
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stages.core.errors import DataError, first_line
from stages.core.io import atomic_path, file_digest, read_json, write_json

PARAMS_PATH = Path("params.yaml")

# generate -> validate, train, evaluate, export
DATA_DIR = Path("data")
RAW_DIR = DATA_DIR / "raw"  # user files: a DVC dependency of generate (data/raw/README.md)
SPLITS = ("train", "val", "test")
META_NAME = "meta.json"
META_PATH = DATA_DIR / META_NAME

# users' tables (data.path, `fitline predict` input and output): suffix -> format
TABLE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}

# validate
VALIDATION_REPORT_PATH = Path("reports/validation.json")
DATA_DOCS_DIR = Path("reports/data_docs")

# train
MODELS_DIR = Path("models")
MODEL_PATH = MODELS_DIR / "model.pt"
# the saved model's outputs on every split, bound to model.pt by its digest: train writes them,
# evaluate scores them without loading torch (write_model_outputs / read_model_outputs)
MODEL_OUTPUTS_PATH = MODELS_DIR / "outputs.npz"
CHECKPOINT_DIR = Path("checkpoints")
CHECKPOINT_NAME = "checkpoint.pt"
LIVE_DIR = "dvclive"  # dvclive's own folder (plots/metrics/*.tsv), a plots output of train
METRICS_DIR = Path("metrics")  # committed to git (cache: false): the CI gate's baseline
TRAIN_METRICS_PATH = METRICS_DIR / "train.json"
HISTORY_PATH = METRICS_DIR / "train_history.csv"

# evaluate
EVAL_METRICS_PATH = METRICS_DIR / "eval.json"
REPORTS_DIR = Path("reports")
PREDICTIONS_CSV = REPORTS_DIR / "predictions.csv"
CONFUSION_CSV = REPORTS_DIR / "confusion.csv"
LEARNING_CURVES_PNG = REPORTS_DIR / "learning_curves.png"
PREDICTIONS_PNG = REPORTS_DIR / "predictions.png"
FIT_REPORT_PATH = REPORTS_DIR / "fit.md"

# card
MODEL_CARD_PATH = REPORTS_DIR / "model_card.md"
MODEL_CARD_HTML = REPORTS_DIR / "model_card.html"

# export
ONNX_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"
ONNX_PATH = MODELS_DIR / ONNX_NAME
INT8_PATH = MODELS_DIR / INT8_NAME
EXPORT_METRICS_PATH = METRICS_DIR / "export.json"

# metrics files by the short name gate rules use (`eval.test.r2` -> metrics/eval.json)
METRICS_FILES = {"eval": EVAL_METRICS_PATH, "export": EXPORT_METRICS_PATH, "train": TRAIN_METRICS_PATH}

# tools (not stages): sweep, tune, compare
SWEEP_LEADERBOARD_PATH = REPORTS_DIR / "sweep.csv"
TUNE_LEADERBOARD_PATH = REPORTS_DIR / "tune.csv"
COMPARE_REPORT_PATH = REPORTS_DIR / "compare.md"
COMPARE_CURVES_PATH = REPORTS_DIR / "compare.csv"
COMPARE_CHART_PATH = REPORTS_DIR / "compare.png"

# monitoring (`fitline monitor`, the fitline-monitor deployment)
MONITOR_REPORT_PATH = REPORTS_DIR / "monitor.json"
INCOMING_DIR = DATA_DIR / "incoming"  # batches the scheduled monitor checks

# the flows' own state, inside DVC's scratch folder (git- and DVC-ignored)
DVC_TMP_DIR = Path(".dvc") / "tmp"
PIPELINE_CACHE_DIR = DVC_TMP_DIR / "fitline-prefect-cache"  # Prefect task results of `fitline run`
SWEEP_CACHE_DIR = DVC_TMP_DIR / "fitline-sweep-cache"  # finished sweep/compare trials
FLOW_LOCK_PATH = DVC_TMP_DIR / "fitline-flow.lock"  # one flow run per workspace
TUNE_STORAGE_PATH = DVC_TMP_DIR / "fitline-tune.db"  # `fitline tune` studies (SQLite), the tune.storage default


# ------------------------------------------------------------------------ data/meta.json


ColumnKind = Literal["numeric", "boolean", "categorical", "datetime"]


@dataclass(frozen=True)
class Column:
    """One feature column as the model takes it (raw, as in the user's file).

    numeric: floats, NaN for missing. boolean and categorical: values compared as strings
    (`stages.data.encoding.category_keys`), the model knowing `vocabulary` (the train split's
    categories, rare ones pooled out); anything else is the unknown category, a missing value
    its own. datetime: parsed timestamps, passed to the model as days since 1970-01-01 (UTC)."""

    name: str
    kind: ColumnKind = "numeric"
    missing_rate: float = 0.0  # share of the train split's rows without a value
    vocabulary: list[str] | None = None  # boolean and categorical

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Column:
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})


@dataclass(frozen=True)
class Meta:
    """data/meta.json: what generate made (task, columns, rows per split, classes, ground truth),
    read by every later stage."""

    task: Literal["regression", "classification"]
    feature_names: list[str]
    target: str
    rows: dict[str, int] = field(default_factory=dict)  # rows per split
    classes: list[Any] | None = None  # class labels in index order (classification)
    class_counts: dict[str, list[int]] | None = None  # per split, per class index
    source: str = "synthetic"  # synthetic | file
    kind: str | None = None  # the synthetic kind, or "file"
    path: str | None = None  # the user file (source file)
    source_sha256: str | None = None  # of the user file
    seed: int | None = None
    n_features: int = 0
    ground_truth: dict[str, Any] | None = None  # synthetic data: how it was made
    columns: list[Column] | None = None  # the features' schema; None: every feature numeric, none missing
    dropped: dict[str, str] | None = None  # columns of the user's file left out, and why
    target_missing: int | None = None  # rows of the user's file dropped for a missing target

    REQUIRED = ("task", "feature_names", "target")
    # the others are written as null (the files of the numeric-only runs keep their bytes)
    OMITTED_WHEN_NONE = ("class_counts", "source_sha256", "columns", "dropped", "target_missing")

    def __post_init__(self) -> None:
        if self.columns is not None and [c.name for c in self.columns] != list(self.feature_names):
            raise DataError(f"{META_PATH}: columns {[c.name for c in self.columns]} are not the features "
                            f"{self.feature_names} (re-run the generate stage)")

    @property
    def schema(self) -> list[Column]:
        """Every feature's Column (numeric ones made up when the file has no schema)."""
        return self.columns if self.columns is not None else [Column(n) for n in self.feature_names]

    @property
    def n_classes(self) -> int | None:
        return len(self.classes) if self.task == "classification" and self.classes else None

    @property
    def irreducible(self) -> dict[str, float] | None:
        """The noise floor per metric when the data is synthetic (else None)."""
        return (self.ground_truth or {}).get("irreducible")

    @classmethod
    def from_dict(cls, raw: Any, where: str | Path = META_PATH) -> Meta:
        if not isinstance(raw, dict):
            raise DataError(f"{where}: not a JSON object (re-run the generate stage)")
        for key in cls.REQUIRED:
            if key not in raw:
                raise DataError(f"{where}: missing key {key!r} (re-run the generate stage)")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values.setdefault("n_features", len(raw["feature_names"]))
        if values.get("columns") is not None:
            values["columns"] = [Column.from_dict(c) for c in values["columns"]]
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in self.OMITTED_WHEN_NONE}


# ------------------------------------------------------------------ the model's config


@dataclass(frozen=True)
class ModelConfig:
    """What the weights in models/model.pt are: the architecture build_model rebuilds, the data
    it was trained for (task, features in order, target, classes) and its loss. Saved beside the
    weights as a plain dict (to_dict), so the file loads with torch.load(weights_only=True)."""

    task: Literal["regression", "classification"]
    feature_names: list[str]
    target: str
    classes: list[Any] | None
    n_features: int
    n_outputs: int  # 1 for regression, the class count for classification
    model: str  # linear | mlp
    hidden: list[int]
    activation: str
    dropout: float
    scaling: str  # standard | none
    loss: str | None = None  # the training loss (optim.resolve_loss)
    huber_delta: float = 1.0
    # the raw-row additions; absent in a numeric-only model (its file keeps its bytes)
    columns: list[Column] | None = None  # the inputs' schema (Meta.columns)
    target_transform: str | None = None  # none | log1p: predictions come back in the target's units
    max_one_hot: int | None = None  # categorical inputs up to this many categories one-hot (None: the default)

    @classmethod
    def from_dict(cls, raw: Any, where: str | Path = MODEL_PATH) -> ModelConfig:
        if not isinstance(raw, dict):
            raise DataError(f"{where}: the model's config is not a mapping (re-run the train stage)")
        known = [f.name for f in fields(cls)]
        missing = [k for k in known[:11] if k not in raw]
        if missing:
            raise DataError(f"{where}: the model's config lacks {', '.join(missing)} (re-run the train stage)")
        values = {k: raw[k] for k in known if k in raw}
        if values.get("columns") is not None:
            values["columns"] = [Column.from_dict(c) for c in values["columns"]]
        return cls(**values)

    @property
    def schema(self) -> list[Column]:
        return self.columns if self.columns is not None else [Column(n) for n in self.feature_names]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("columns", "target_transform", "max_one_hot"):
            if out[key] is None:
                del out[key]
        return out


def load_meta(data_dir: str | Path = DATA_DIR) -> Meta:
    path = Path(data_dir) / META_NAME
    return Meta.from_dict(read_json(path), path)


def write_meta(meta: Meta, data_dir: str | Path = DATA_DIR) -> None:
    write_json(Path(data_dir) / META_NAME, meta.to_dict())


def check_model_fits(cfg: ModelConfig, meta: Meta, model_path: str | Path = MODEL_PATH) -> None:
    """The model was trained for this data's task and features, in this order (else: re-run
    train); evaluate and export call this before they feed the data to the model."""
    if cfg.task != meta.task or list(cfg.feature_names) != list(meta.feature_names):
        raise DataError(
            f"{model_path}: trained for task {cfg.task!r} on features {cfg.feature_names}, "
            f"but {META_PATH} has task {meta.task!r} and features {meta.feature_names} "
            "(re-run the train stage)"
        )


# ------------------------------------------------------------------ the model's outputs

def data_fingerprint(data_dir: str | Path = DATA_DIR) -> str:
    """md5 of each split's parquet file and of meta.json, folded into one hex digest: the data a
    model's saved outputs and a sweep's cached trials were computed on."""
    folded = hashlib.sha256()
    for name in (*(f"{s}.parquet" for s in SPLITS), META_NAME):
        path = Path(data_dir) / name
        if not path.exists():
            raise DataError(f"{path}: file not found (run `dvc repro validate`)")
        folded.update(f"{name}:{file_digest(path, 'md5')}\n".encode())
    return folded.hexdigest()


def write_model_outputs(outputs: dict[str, np.ndarray], targets: dict[str, np.ndarray], cfg: ModelConfig,
                        model_path: str | Path = MODEL_PATH, data_dir: str | Path = DATA_DIR,
                        dest: str | Path = MODEL_OUTPUTS_PATH) -> None:
    """The model's outputs and the targets per split, with model_path's sha256, the data's
    fingerprint and the model's config, as an .npz atomically; the zip entries carry a fixed
    date, so the same model on the same data gives the same bytes (DVC sees no change)."""
    arrays = {"model_sha256": np.array(file_digest(model_path)), "data": np.array(data_fingerprint(data_dir)),
              "config": np.array(json.dumps(cfg.to_dict())),
              **{f"split_{name}": np.ascontiguousarray(out) for name, out in outputs.items()},
              **{f"target_{name}": np.ascontiguousarray(y) for name, y in targets.items()}}
    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for key, value in arrays.items():
            with zf.open(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w", force_zip64=True) as f:
                np.lib.format.write_array(f, value, allow_pickle=False)


@dataclass(frozen=True)
class ModelOutputs:
    """models/outputs.npz as read back: per split the model's outputs and the targets."""

    outputs: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    config: ModelConfig


def read_model_outputs(path: str | Path = MODEL_OUTPUTS_PATH, model_path: str | Path = MODEL_PATH,
                       data_dir: str | Path = DATA_DIR) -> ModelOutputs:
    """The saved outputs, targets and model config; a missing or unreadable file, or one written
    for another model.pt or other data than those there now, is a DataError naming the fix."""
    path, model_path = Path(path), Path(model_path)
    for must in (path, model_path):
        if not must.exists():
            raise DataError(f"{must}: file not found (run `dvc repro train`)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files}
        digest, data_key, raw_cfg = str(data["model_sha256"]), str(data["data"]), json.loads(str(data["config"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable outputs file ({first_line(exc)}; run `dvc repro train`)") from None
    if digest != file_digest(model_path):
        raise DataError(f"{path} holds the outputs of another {model_path} than the one there now "
                        "(run `dvc repro train`)")
    if data_key != data_fingerprint(data_dir):
        raise DataError(f"{path} holds the outputs on other data than {data_dir}/ holds now (run `dvc repro train`)")
    return ModelOutputs({k.removeprefix("split_"): v for k, v in data.items() if k.startswith("split_")},
                        {k.removeprefix("target_"): v for k, v in data.items() if k.startswith("target_")},
                        ModelConfig.from_dict(raw_cfg, model_path))


def split_path(name: str, data_dir: str | Path = DATA_DIR) -> Path:
    """data/<split>.parquet"""
    return Path(data_dir) / f"{name}.parquet"


# ------------------------------------------------------------------ the training history

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "lr", "epoch_seconds")


def history_csv(history: list[dict[str, Any]]) -> str:
    """metrics/train_history.csv's text: one row per epoch, floats as repr (exact round trip)."""
    rows = [",".join(HISTORY_COLUMNS)]
    rows += [",".join(repr(rec[c]) for c in HISTORY_COLUMNS) for rec in history]
    return "\n".join(rows) + "\n"


def read_history(path: str | Path = HISTORY_PATH) -> list[dict[str, Any]]:
    """metrics/train_history.csv as a list of per-epoch dicts (numbers as float, epoch as int)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found (run the train stage first)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in rows]
    except (TypeError, ValueError):
        raise DataError(f"{path}: not a training history (columns epoch, train_loss, val_loss, ...)") from None
