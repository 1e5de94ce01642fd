"""Typed, frozen params: params.yaml is parsed here once, and nowhere else.

Each section of params.yaml is one pydantic model. Unknown keys, wrong types, out-of-range
values and inconsistent combinations are rejected before any work is done, with a one-line
`ParamsError` naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stages.core.contracts import PARAMS_PATH, TABLE_FORMATS, TUNE_STORAGE_PATH
from stages.core.errors import ParamsError

# ------------------------------------------------------------------------------------ options
# Each option's values are declared here and nowhere else: pydantic checks params against the
# Literal, error texts list `allowed(...)`, and the dispatch dicts elsewhere are keyed by it,
# with a test comparing the keys, so params can never accept a name that nothing dispatches.

DataSource = Literal["synthetic", "file"]
DataKind = Literal["linear", "friedman", "classification", "mixed"]  # synthetic data
# a user file's column declared in data.columns: its kind (stages/data/columns.py), or left out
ColumnOverride = Literal["numeric", "categorical", "datetime", "drop"]
TaskName = Literal["regression", "classification"]
DataTask = Literal["auto", TaskName]  # auto: inferred from the file's target column
ModelKind = Literal["linear", "mlp"]
Scaling = Literal["standard", "none"]
Activation = Literal["relu", "gelu", "tanh"]
LossName = Literal["mse", "huber", "cross_entropy"]
LossChoice = Literal["auto", LossName]  # auto: the task's own loss (stages/training/optim.py)
TargetTransformName = Literal["none", "log1p"]  # applied inside the model (stages/training/targets.py)
TargetTransformChoice = Literal["auto", TargetTransformName]  # auto: log1p for a skewed non-negative target
OptimizerName = Literal["gd", "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]
Regularizer = Literal["none", "l1", "l2", "elastic_net"]
Schedule = Literal["constant", "exponential", "step", "cosine"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["fp32", "bf16"]
Backend = Literal["auto", "gloo", "nccl"]
Quantization = Literal["none", "dynamic", "static"]
Exporter = Literal["direct", "dynamo"]  # how the network becomes ONNX (stages/serving/onnx.py)
Auto = Literal["auto"]  # a train value chosen from the data (stages/training/sizing.py)
AUTO: Auto = "auto"
PruneCriterion = Literal["l1", "l2"]  # the norm a hidden unit's incoming weights are ranked by
Better = Literal["higher", "lower"]  # which way a gated metric improves
Runner = Literal["threads", "processes", "dask"]
JudgedLoss = Literal["mse", "log_loss"]  # the loss the fit diagnosis, sweeps and compare rank by
PrunerName = Literal["median", "successive_halving", "none"]  # `fitline tune` stops hopeless trials early


def allowed(option: Any) -> str:
    """An option's values as error texts list them, in declaration order: "a, b, c"."""
    return ", ".join(get_args(option))


class Section(BaseModel):
    # allow_inf_nan=False: an infinite noise or reg_strength passed every range check that has
    # no upper bound, and failed later far from the key that caused it
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------------------- data


class SplitParams(Section):
    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitParams:
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(
                f"data.split: train + val + test = {total:g}, must sum to 1 "
                f"(got train={self.train:g}, val={self.val:g}, test={self.test:g})"
            )
        return self


class DataParams(Section):
    source: DataSource = "synthetic"
    kind: DataKind = "friedman"
    path: str | None = None
    target: str = Field("y", min_length=1)
    task: DataTask = "auto"
    n_samples: int = Field(20000, ge=20, le=1_000_000_000)
    n_features: int = Field(10, ge=1, le=100_000)
    n_informative: int = Field(5, ge=1)
    n_classes: int = Field(2, ge=2, le=1000)
    noise: float = Field(1.0, ge=0)
    class_sep: float = Field(3.0, gt=0)
    class_weights: tuple[float, ...] | None = None
    split: SplitParams = SplitParams()
    seed: int = Field(42, ge=0, le=2**32 - 1)
    chunk_rows: int = Field(1_000_000, ge=1000)
    # the user file's columns whose inferred kind is wrong: {name: numeric | categorical | ...}
    columns: dict[str, ColumnOverride] = Field(default_factory=dict)
    # categories seen on fewer train rows are pooled into "unknown" (file and mixed)
    min_category_count: int = Field(5, ge=1)
    missing_rate: float = Field(0.05, ge=0, lt=1)  # mixed: share of feature values blanked at random

    @model_validator(mode="after")
    def _consistent(self) -> DataParams:
        if self.columns and self.source != "file":
            raise ValueError(f"data.columns: {sorted(self.columns)} given, but only a user file "
                             "(data.source: file) has columns to declare")
        if self.source == "file":
            if self.target in self.columns:
                raise ValueError(f"data.columns: {self.target!r} is the target (data.target); "
                                 "declare feature columns only")
            if not self.path:
                raise ValueError("data.path: required when data.source is 'file' (a .csv or .parquet file)")
            if Path(self.path).suffix.lower() not in TABLE_FORMATS:
                raise ValueError(f"data.path: {self.path!r} must end in .csv or .parquet")
            return self
        if self.n_informative > self.n_features:
            raise ValueError(
                f"data.n_informative: {self.n_informative} exceeds data.n_features={self.n_features}"
            )
        if self.kind == "friedman" and self.n_features < 5:
            raise ValueError(f"data.n_features: {self.n_features}; kind 'friedman' needs at least 5")
        if self.kind == "classification":
            if self.noise >= 1:
                raise ValueError(
                    f"data.noise: {self.noise:g}; for classification it is a label-flip rate in [0, 1)"
                )
            if self.class_weights is not None:
                if len(self.class_weights) != self.n_classes:
                    raise ValueError(
                        f"data.class_weights: {len(self.class_weights)} weights given, "
                        f"data.n_classes is {self.n_classes}"
                    )
                if any(w <= 0 for w in self.class_weights) or not math.isclose(
                    sum(self.class_weights), 1.0, abs_tol=1e-6
                ):
                    raise ValueError(
                        f"data.class_weights: {list(self.class_weights)} must be positive and sum to 1"
                    )
        elif self.class_weights is not None:
            raise ValueError("data.class_weights: only allowed with kind 'classification'")
        for name in ("train", "val", "test"):
            if round(self.n_samples * getattr(self.split, name)) < 1:
                raise ValueError(
                    f"data.split.{name}: {getattr(self.split, name):g} of {self.n_samples} rows is empty"
                )
        return self


# ----------------------------------------------------------------------------------- validate


class ValidateParams(Section):
    min_rows: int = Field(1, ge=1)  # per split
    # {column: [low, high]}; columns not named get robust bounds derived from the train split
    feature_bounds: dict[str, tuple[float, float]] | None = None
    # robust bounds: train quantiles [q, 1-q] widened by margin x (q_hi - q_lo) on each side
    bounds_quantile: float = Field(0.001, ge=0, lt=0.5)
    bounds_margin: float = Field(1.0, ge=0)
    target_bounds: tuple[float, float] | None = None  # regression; null = robust bounds from train
    class_balance_tol: float = Field(0.05, gt=0, le=1)
    drift_mean_tol: float = Field(0.25, gt=0)  # in train stds
    drift_std_tol: float = Field(0.25, gt=0)  # relative to train's std
    # drift tolerances (and the raw layout's share tolerances) widen to this many standard errors
    # of the statistic in small splits
    drift_noise_z: float = Field(5.0, ge=0)
    check_leakage: bool = True
    # the raw layout (meta.json `columns`: user tables, mixed), stages/validation/raw.py and duplicates.py
    missing_rate_tol: float = Field(0.1, ge=0, le=1)  # a column's missing share may exceed train's by this
    unseen_tol: float = Field(0.05, ge=0, le=1)  # share of val/test values in categories train lacks, beyond expected
    outlier_tol: float = Field(0.01, ge=0, le=1)  # share outside the robust bounds that only warns
    category_share_tol: float = Field(0.1, gt=0, le=1)  # a category's share may move by this from train's
    leakage_tol: float = Field(0.0, ge=0, le=1)  # rows shared with an earlier split, beyond train's own duplicates

    @model_validator(mode="after")
    def _bounds_ordered(self) -> ValidateParams:
        for col, (lo, hi) in (self.feature_bounds or {}).items():
            if not lo < hi:
                raise ValueError(f"validate.feature_bounds.{col}: low {lo:g} must be below high {hi:g}")
        if self.target_bounds is not None and not self.target_bounds[0] < self.target_bounds[1]:
            raise ValueError(f"validate.target_bounds: {list(self.target_bounds)}: low must be below high")
        return self


# -------------------------------------------------------------------------------------- train


class EarlyStoppingParams(Section):
    patience: int | None = Field(20, ge=1)  # null disables early stopping
    min_delta: float = Field(0.0, ge=0)


class DistributedParams(Section):
    # enabled: `python -m stages.train` relaunches itself as nproc DDP workers (torch.distributed.run);
    # a run already started by torchrun is distributed whatever this says (see stages/training/distributed.py)
    enabled: bool = False
    nproc: int = Field(2, ge=1, le=1024)  # workers on this machine (one per GPU for CUDA)
    backend: Backend = "auto"  # auto: nccl when training on CUDA, else gloo


class TrainParams(Section):
    model: ModelKind = "mlp"
    scaling: Scaling = "standard"
    hidden: tuple[int, ...] = (64, 64)
    activation: Activation = "relu"
    dropout: float = Field(0.0, ge=0, lt=1)
    # categorical and boolean columns with at most this many categories are one-hot inputs,
    # larger ones learned embeddings (stages/training/preprocessing.py); 0 embeds every one
    max_one_hot: int = Field(32, ge=0, le=100_000)
    target_transform: TargetTransformChoice = "auto"
    loss: LossChoice = "auto"
    huber_delta: float = Field(1.0, gt=0)
    optimizer: OptimizerName = "adam"
    # auto: chosen from the train rows (stages/training/sizing.py): 256, 0.003 and 0.001 on large
    # tables, a smaller batch, lr and a stronger penalty on small ones
    lr: Annotated[float, Field(gt=0, le=100)] | Auto = AUTO
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: Annotated[int, Field(ge=1)] | Auto = AUTO
    epochs: int = Field(200, ge=1, le=1_000_000)
    regularizer: Regularizer = "l2"
    reg_strength: Annotated[float, Field(ge=0)] | Auto = AUTO
    l1_ratio: float = Field(0.5, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Schedule = "constant"
    gamma: float = Field(0.99, gt=0, le=1)
    step_size: int = Field(30, ge=1)
    warmup_epochs: int = Field(0, ge=0)
    grad_clip: float | None = Field(None, gt=0)
    early_stopping: EarlyStoppingParams = EarlyStoppingParams()
    device: Device = "auto"
    precision: Precision = "fp32"
    checkpoint_every: int = Field(10, ge=1)
    seed: int = Field(42, ge=0, le=2**32 - 1)
    distributed: DistributedParams = DistributedParams()

    @model_validator(mode="after")
    def _consistent(self) -> TrainParams:
        if self.model == "mlp" and (not self.hidden or any(h < 1 for h in self.hidden)):
            raise ValueError(f"train.hidden: {list(self.hidden)}; an mlp needs one or more positive layer sizes")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"train.betas: {list(self.betas)}; each must be in [0, 1)")
        if self.weight_decay > 0 and self.optimizer != "adamw":
            raise ValueError(
                f"train.weight_decay: {self.weight_decay:g} is decoupled decay for optimizer 'adamw' only "
                f"(optimizer is {self.optimizer!r}); use regularizer 'l2' instead"
            )
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"train.warmup_epochs: {self.warmup_epochs} must be below train.epochs={self.epochs}")
        if self.precision == "bf16" and self.device == "cpu":
            raise ValueError("train.precision: 'bf16' needs device 'cuda' or 'auto' (it is CUDA only)")
        return self


# ----------------------------------------------------------------------------------- evaluate


class EvaluateParams(Section):
    # The "loss" judged is MSE (regression) or log loss (classification), on the whole split.
    # underfit (synthetic data): train loss above this multiple of the irreducible loss
    underfit_noise_ratio: float = Field(1.5, gt=1)
    # underfit (no ground truth): train skill over the constant baseline below this
    # (regression: R²; classification: 1 - error rate / baseline error rate)
    min_skill: float = Field(0.1, ge=0, lt=1)
    # overfit: generalisation gap (val - train) / train above this
    overfit_gap: float = Field(0.3, gt=0)
    # losses and gaps smaller than this fraction of the constant baseline's loss count as zero
    # (keeps noise-free data, where train loss -> 0, from turning ratios into noise)
    negligible: float = Field(0.01, ge=0, lt=1)
    # overfit: the gap must also exceed this many standard errors of (val - train), so that
    # sampling noise of small splits is not called overfitting (0 = off)
    gap_z: float = Field(3.0, ge=0)
    # learning curve: overfit when the best val epoch comes before this fraction of the epochs
    # run AND the final val loss is more than val_rise (relative) above its minimum
    early_best_fraction: float = Field(0.5, gt=0, lt=1)
    val_rise: float = Field(0.1, gt=0)
    # plots: at most this many test rows (a seeded sample) in reports/predictions.csv
    plot_points: int = Field(5000, ge=10)
    # k-fold cross-validation on train+val (stages/evaluation/cv.py): 0 = off, else k >= 2 models
    # retrained with the train params, their held-out scores in eval.json `cv` as mean, std, folds
    cv_folds: int = Field(0, ge=0, le=100)

    @model_validator(mode="after")
    def _cv_folds(self) -> EvaluateParams:
        if self.cv_folds == 1:
            raise ValueError("evaluate.cv_folds: 1; cross-validation needs 2 or more folds (0 turns it off)")
        return self


# The loss judged for each task (the metric of the task's default training objective, so a
# model is judged on what it was trained for), and its name in reports and plots.
JUDGED_LOSS: dict[TaskName, JudgedLoss] = {"regression": "mse", "classification": "log_loss"}
LOSS_LABEL: dict[JudgedLoss, str] = {"mse": "MSE", "log_loss": "log loss"}


# ------------------------------------------------------------------------------------- export


class PruneParams(Section):
    # structured pruning before export (stages/training/pruning.py): drop round(amount * width)
    # units of each hidden layer (lowest incoming-weight norm; at least one stays), fine-tune the
    # smaller network, export that one; 0 = off
    amount: float = Field(0.0, ge=0, lt=1)
    fine_tune_epochs: int = Field(5, ge=1, le=1_000_000)
    criterion: PruneCriterion = "l1"


class ExportParams(Section):
    exporter: Exporter = "direct"
    opset: int = Field(20, ge=18, le=23)
    quantization: Quantization = "dynamic"
    calibration_rows: int = Field(1000, ge=1)
    parity_atol: float = Field(1.0e-4, gt=0)
    parity_rtol: float = Field(1.0e-5, ge=0)
    max_metric_drop: float = Field(0.01, ge=0)
    latency_repeats: int = Field(20, ge=1)
    prune: PruneParams = PruneParams()


# --------------------------------------------------------------------------------------- gate


# The rule grammar ("eval.test.r2 >= 0.85") is parsed by stages/tools/gate_rules.py when the gate
# starts, not here: every stage depends on params.py, and the gate's grammar must not be one of
# their dependencies. A malformed rule makes the gate exit 2 naming the rule.


class AbsoluteRule(Section):
    rule: str = Field(min_length=1)  # e.g. "eval.test.accuracy >= 0.9"
    when: TaskName | None = None  # only judged for this task (from data/meta.json); else skipped


class RegressionRule(Section):
    metric: str = Field(min_length=1)  # e.g. eval.test.rmse
    better: Better
    # allowed worsening against the baseline = max(abs_tol, rel_tol * |baseline|)
    abs_tol: float = Field(0.0, ge=0)
    rel_tol: float = Field(0.0, ge=0)
    when: TaskName | None = None


class GateParams(Section):
    # The defaults are the project's gate as params.yaml ships it (thresholds and tolerances
    # chosen there from measured runs): a params file without a gate section is still gated.
    # absolute rules: "PATH OP VALUE" strings, or {rule: "...", when: regression|classification}
    rules: tuple[str | AbsoluteRule, ...] = (
        AbsoluteRule(rule="eval.test.r2 >= 0.90", when="regression"),
        AbsoluteRule(rule="eval.test.accuracy >= 0.7", when="classification"),
        "eval.fit.verdict == good",
        "export.metric_drop <= 0.01",
        "export.parity_max_scaled <= 1.0",
    )
    regressions: tuple[RegressionRule, ...] = (
        RegressionRule(metric="eval.test.rmse", better="lower", rel_tol=0.02, when="regression"),
        RegressionRule(metric="eval.test.r2", better="higher", abs_tol=0.005, when="regression"),
        RegressionRule(metric="eval.test.log_loss", better="lower", rel_tol=0.05, when="classification"),
        RegressionRule(metric="eval.test.accuracy", better="higher", abs_tol=0.01, when="classification"),
    )


# -------------------------------------------------------------------------------------- sweep


# `fitline compare` tries each optimizer at these learning rates and keeps the best. fitline
# trains on standardised features and target, so one grid serves most data; each is centred on
# the best of a 5-value grid measured on the default data (friedman, 20000 rows, mlp 64x64).
COMPARE_LRS: dict[OptimizerName, tuple[float, ...]] = {
    "gd": (0.01, 0.03, 0.1),  # full batch: one step per epoch; 0.3 and above diverge or stall
    "sgd": (0.03, 0.1, 0.3),
    "momentum": (0.01, 0.03, 0.1),  # momentum 0.9 multiplies the step by about 10
    "nesterov": (0.01, 0.03, 0.1),
    "adagrad": (0.01, 0.03, 0.1),
    "rmsprop": (0.00003, 0.0001, 0.0003),  # with momentum 0.9 (train.momentum)
    "adam": (0.0003, 0.001, 0.003),
    "adamw": (0.0003, 0.001, 0.003),
}
# train keys a sweep grid may name besides the top-level ones of TrainParams
NESTED_TRAIN_KEYS = ("early_stopping.patience", "early_stopping.min_delta")


class CompareParams(Section):
    optimizers: tuple[OptimizerName, ...] = get_args(OptimizerName)
    # per-optimizer learning rates to try; an optimizer not named here uses COMPARE_LRS
    lrs: dict[OptimizerName, tuple[float, ...]] = Field(default_factory=dict)
    epochs: int | None = Field(60, ge=1)  # null = train.epochs; early stopping is off in a comparison
    weight_decay: float = Field(0.01, ge=0)  # adamw's decoupled decay (the others get none)
    target_loss: float | None = Field(None, gt=0)  # null = target_ratio x the best final val loss
    target_ratio: float = Field(1.1, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> CompareParams:
        if not self.optimizers:
            raise ValueError("sweep.compare.optimizers: empty; name one or more of " + allowed(OptimizerName))
        if len(set(self.optimizers)) != len(self.optimizers):
            raise ValueError(f"sweep.compare.optimizers: {list(self.optimizers)} names an optimizer twice")
        for name, lrs in self.lrs.items():
            if not lrs or not all(0 < lr <= 100 and math.isfinite(lr) for lr in lrs):
                raise ValueError(f"sweep.compare.lrs.{name}: {list(lrs)}; give one or more learning rates in (0, 100]")
        return self

    def lrs_for(self, optimizer: OptimizerName) -> tuple[float, ...]:
        return self.lrs.get(optimizer, COMPARE_LRS[optimizer])


def train_keys() -> list[str]:
    """The train keys a sweep grid or a tune space may name (dotted for the nested ones)."""
    return sorted(k for k in TrainParams.model_fields if k != "early_stopping") + list(NESTED_TRAIN_KEYS)


class SweepParams(Section):
    # train key -> values to try; every combination is one trial (dotted keys for early_stopping)
    grid: dict[str, tuple[Any, ...]] = Field(
        default_factory=lambda: {"lr": (0.001, 0.003, 0.01), "reg_strength": (0.0001, 0.001)}
    )
    workers: int = Field(2, ge=1)  # trials run at once
    runner: Runner = "threads"
    dask_address: str | None = None  # runner dask: a scheduler address; null = a local cluster
    compare: CompareParams = CompareParams()

    @model_validator(mode="after")
    def _grid_keys(self) -> SweepParams:
        allowed = train_keys()
        for key, values in self.grid.items():
            if key not in allowed:
                raise ValueError(f"sweep.grid: unknown train key {key!r} (allowed: {', '.join(allowed)})")
            if not values:
                raise ValueError(f"sweep.grid.{key}: no values; give a list of one or more values to try")
        if self.dask_address and self.runner != "dask":
            raise ValueError(f"sweep.dask_address: set, but sweep.runner is {self.runner!r} (use runner: dask)")
        return self


# --------------------------------------------------------------------------------------- tune


def train_key_type(key: str) -> type | None:
    """int or float for a numeric train key (a range may be sampled), None for any other kind."""
    *parents, leaf = key.split(".")
    model: Any = TrainParams
    for part in parents:
        model = model.model_fields[part].annotation
    annotation = model.model_fields[leaf].annotation
    # an Annotated range is its base type; an `auto` choice does not make a key non-numeric
    kinds = {get_args(k)[0] if get_origin(k) is Annotated else k for k in get_args(annotation) or (annotation,)}
    kinds = {k for k in kinds if k is not type(None) and get_origin(k) is not Literal}
    return next((kind for kind in (float, int) if kinds == {kind}), None)


class SpaceParam(Section):
    """One train key of the tune space: a range (low, high, log) or a list of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False  # sample the range on a log scale (low > 0)
    choices: tuple[Any, ...] | None = None


class TuneParams(Section):
    trials: int = Field(20, ge=1)  # the study's budget: finished trials (a rerun continues up to it)
    timeout: float | None = Field(None, gt=0)  # seconds; no new trial starts after it
    sampler_seed: int = Field(42, ge=0, le=2**32 - 1)  # TPE's seed: a fresh study is reproducible
    startup_trials: int = Field(5, ge=0)  # random trials before TPE models; the median pruner waits as long
    pruner: PrunerName = "median"
    warmup_epochs: int = Field(10, ge=0)  # epochs every trial trains before it may be pruned
    storage: str = TUNE_STORAGE_PATH.as_posix()  # the studies' SQLite file, relative to the workspace
    space: dict[str, SpaceParam] = Field(default_factory=lambda: {
        "lr": SpaceParam(low=0.0001, high=0.03, log=True),
        "reg_strength": SpaceParam(low=0.00001, high=0.01, log=True),
    })

    @model_validator(mode="after")
    def _space(self) -> TuneParams:
        if not self.space:
            raise ValueError("tune.space: empty; name train keys with a range or choices, "
                             "e.g. tune: {space: {lr: {low: 0.0001, high: 0.03, log: true}}}")
        allowed = train_keys()
        for key, spec in self.space.items():
            if key not in allowed:
                raise ValueError(f"tune.space: unknown train key {key!r} (allowed: {', '.join(allowed)})")
            _check_space_param(f"tune.space.{key}", spec, train_key_type(key))
        return self


def _check_space_param(where: str, spec: SpaceParam, kind: type | None) -> None:
    """A range with low < high (low > 0 on a log scale, whole numbers for an int key), or choices."""
    ranged = spec.low is not None or spec.high is not None
    if spec.choices is not None:
        if ranged or spec.log:
            raise ValueError(f"{where}: give either choices or low/high (log), not both")
        if not spec.choices:
            raise ValueError(f"{where}.choices: empty; give one or more values to try")
        return
    if spec.low is None or spec.high is None:
        raise ValueError(f"{where}: give low and high (and log: true for a log scale), or choices: [...]")
    if kind is None:
        raise ValueError(f"{where}: a range needs a numeric train key; give choices: [...] instead")
    if not spec.low < spec.high:
        raise ValueError(f"{where}: low {spec.low:g} must be below high {spec.high:g}")
    if spec.log and spec.low <= 0:
        raise ValueError(f"{where}: log scale needs low > 0 (got {spec.low:g})")
    if kind is int and not (spec.low.is_integer() and spec.high.is_integer()):
        raise ValueError(f"{where}: an integer key needs whole-number low and high")


# -------------------------------------------------------------------------------------- all


# ------------------------------------------------------------------------------------ monitor


class MonitorParams(Section):
    # a column drifts when its shift is significant (KS / chi-square p below p_value) and large
    # (population stability index above psi); both, so neither noise nor a tiny sure shift alarms
    p_value: float = Field(0.01, gt=0, lt=1)
    psi: float = Field(0.2, gt=0)
    missing_rate_tol: float = Field(0.1, ge=0, le=1)  # a column's missing share may exceed train's by this
    outlier_tol: float = Field(0.01, ge=0, le=1)  # share of values outside train's range allowed
    min_rows: int = Field(30, ge=1)  # fewer rows in a batch: cannot judge (exit 2)


class Params(Section):
    data: DataParams = DataParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()
    gate: GateParams = GateParams()
    sweep: SweepParams = SweepParams()
    tune: TuneParams = TuneParams()
    monitor: MonitorParams = MonitorParams()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def validate_params(self) -> ValidateParams:
        return self.validate_


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the field at `loc` (for listing allowed keys)."""
    model: Any = Params
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = next(
            (f for name, f in model.model_fields.items() if part in (name, f.alias)), None
        )
        if field is None:
            return model
        model = field.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "params"
    if err["type"] == "extra_forbidden":
        owner = _model_at(loc[:-1])
        allowed = sorted(f.alias or n for n, f in owner.model_fields.items()) if owner else []
        where = ".".join(str(p) for p in loc[:-1]) or "top level"
        return f"unknown key {key!r} (allowed in {where}: {', '.join(allowed)})"
    if err["type"] == "value_error":
        return str(err["ctx"]["error"])
    return f"{key}: {err['input']!r} is not allowed: {err['msg']}"


def merge_auto_errors(errors: list[Any]) -> list[Any]:
    """A value that is neither a valid number nor `auto` fails both halves of the union: one error."""
    tag = f"literal[{AUTO!r}]"
    auto_keys = {tuple(e["loc"][:-1]) for e in errors if e["loc"] and e["loc"][-1] == tag}
    merged = []
    for e in errors:
        parent = tuple(e["loc"][:-1])
        if parent in auto_keys:
            if e["loc"][-1] == tag:
                continue
            e = {**e, "loc": parent, "msg": f"{e['msg']}, or {AUTO!r}"}
        merged.append(e)
    return merged


def parse_params(raw: Any, source: str = str(PARAMS_PATH)) -> Params:
    """Validate a params mapping (as read from YAML) into typed `Params`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        messages = [_describe(e) for e in merge_auto_errors(exc.errors())]
        more = f" (and {len(messages) - 1} more: {'; '.join(messages[1:])})" if len(messages) > 1 else ""
        raise ParamsError(f"{source}: {messages[0]}{more}") from None


def load_params(path: str | Path = PARAMS_PATH) -> Params:
    """Read and validate params.yaml; a ParamsError names the problem in one line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the project root)") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_params(raw, str(path))
