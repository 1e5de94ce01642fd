"""The models: `linear` (linear / logistic / softmax regression) and `mlp`.

A model takes RAW float32 features (N, n_features). The train split's standardisation lives
inside it as buffers (part of the state_dict, so also of the exported ONNX graph): whoever
uses the model passes raw features. For regression the target is standardised the same way
(`y_mean`, `y_std`), so the optimiser sees a unit-scale problem whatever the target's units,
and `forward` maps back: it returns predictions in the target's own units, shape (N,).
For classification `forward` returns logits (N, K).

With a schema (ModelConfig.columns) the input is the encoded matrix of stages/data/encoding.py,
one column per schema Column (numbers and dates with NaN, category indices), and the model's
input layer (stages/training/preprocessing.py) imputes, flags, expands dates and one-hots or
embeds categories before the standardisation applies to the continuous inputs. With
ModelConfig.target_transform (log1p) the network fits the transformed, standardised target and
`forward` still returns the target's units. Without either, the model is exactly the plain one.

The model is described by a typed config (stages.core.contracts.ModelConfig), saved beside
the weights as a plain dict; `build_model(cfg)` rebuilds the same architecture from it.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stages.core.contracts import ModelConfig
from stages.core.errors import DataError, first_line
from stages.core.io import atomic_path
from stages.core.params import TrainParams
from stages.training.preprocessing import RawRowEncoder, layer_sizes
from stages.training.targets import TARGET_TRANSFORMS, check_transform

MODELS = ("linear", "mlp")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
TASKS = ("regression", "classification")


class SeededDropout(nn.Module):
    """Dropout that draws its masks from an explicit generator when the trainer sets one.

    nn.Dropout uses torch's global RNG; a sweep trains several models in threads, so the
    trainer hands each model its own generator to keep runs reproducible and independent.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.generator is None:
            return F.dropout(x, self.p, training=True)
        keep = torch.rand(x.shape, generator=self.generator, device=x.device) >= self.p
        return x * keep / (1 - self.p)


def set_dropout_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    """Give every SeededDropout of `model` this generator (None: torch's global RNG again)."""
    for m in model.modules():
        if isinstance(m, SeededDropout):
            m.generator = generator


# train.max_one_hot's default: the limit of a model whose config does not record one
MAX_ONE_HOT = TrainParams.model_fields["max_one_hot"].default


def one_hot_limit(cfg: ModelConfig) -> int:
    """The largest vocabulary `cfg`'s model one-hot encodes (larger ones: embeddings)."""
    limit = cfg.max_one_hot
    return MAX_ONE_HOT if limit is None else int(limit)


def network_size(cfg: ModelConfig) -> tuple[int, int, int]:
    """(a prepared row's width (loop.prepare_split), the network's input width, parameters
    outside the network: the embedding table)."""
    if cfg.columns is None:
        return int(cfg.n_features), int(cfg.n_features), 0
    return layer_sizes(cfg.columns, one_hot_limit(cfg))


class FitlineModel(nn.Module):
    """Standardise -> network -> (regression) de-standardise; with a schema: impute and encode
    (prepare), standardise, one-hot and embed (expand) -> network -> ... -> the target's units.

    forward(x) = output(head(prepare(x))): `prepare` is parameter-free (the identity for a
    numeric-only model), so training applies it once per split and trains `head`."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.task = cfg.task
        self.target_transform = check_transform(cfg.target_transform)
        n_in, n_out = int(cfg.n_features), int(cfg.n_outputs)
        # None for a numeric-only model: no submodule, so its state_dict and init are the plain model's
        self.encoder = RawRowEncoder(cfg.columns, one_hot_limit(cfg)) if cfg.columns is not None else None
        n_scaled = n_in
        if self.encoder is not None:
            n_scaled, n_in = self.encoder.n_scaled, self.encoder.n_outputs
        self.register_buffer("x_mean", torch.zeros(n_scaled))
        self.register_buffer("x_std", torch.ones(n_scaled))
        if self.task == "regression":
            self.register_buffer("y_mean", torch.zeros(()))
            self.register_buffer("y_std", torch.ones(()))
        layers: list[nn.Module] = []
        if cfg.model == "mlp":
            act = ACTIVATIONS[cfg.activation]
            for width in cfg.hidden:
                layers += [nn.Linear(n_in, int(width)), act()]
                if cfg.dropout > 0:
                    layers.append(SeededDropout(float(cfg.dropout)))
                n_in = int(width)
        layers.append(nn.Linear(n_in, n_out))
        self.net = nn.Sequential(*layers)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Raw features -> what `head` takes: the features themselves (numeric-only model), or the
        encoder's prepared rows with the continuous block standardised."""
        if self.encoder is None:
            return x
        continuous, codes = self.encoder.prepare(x)
        parts = [] if continuous is None else [(continuous - self.x_mean) / self.x_std]
        parts += [] if codes is None else [codes]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    def head(self, p: torch.Tensor) -> torch.Tensor:
        """Prepared rows -> network output in standardised (transformed) target units, or logits."""
        z = self.net((p - self.x_mean) / self.x_std if self.encoder is None else self.encoder.expand(p))
        return z.squeeze(-1) if self.task == "regression" else z

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Network output in standardised (transformed) target units (regression) or logits."""
        return self.head(self.prepare(x))

    def output(self, z: torch.Tensor) -> torch.Tensor:
        """`raw`'s output -> predictions in the target's units (regression), or the logits."""
        if self.task != "regression":
            return z
        y = z * self.y_std + self.y_mean
        return y if self.target_transform == "none" else TARGET_TRANSFORMS[self.target_transform][1](y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.raw(x))

    def fit_target(self, y: torch.Tensor) -> torch.Tensor:
        """What `raw` is trained to output for targets `y` (regression): transformed, standardised."""
        y = y if self.target_transform == "none" else TARGET_TRANSFORMS[self.target_transform][0](y)
        return (y - self.y_mean.item()) / self.y_std.item()


def build_model(cfg: ModelConfig, *, generator: torch.Generator | None = None) -> nn.Module:
    """The model `cfg` describes, freshly initialised (from `generator` when given)."""
    if cfg.model not in MODELS:
        raise ValueError(f"model: unknown model {cfg.model!r} (allowed: {', '.join(MODELS)})")
    if cfg.task not in TASKS:
        raise ValueError(f"model: unknown task {cfg.task!r} (allowed: {', '.join(TASKS)})")
    if cfg.model == "mlp" and cfg.activation not in ACTIVATIONS:
        raise ValueError(
            f"model: unknown activation {cfg.activation!r} (allowed: {', '.join(ACTIVATIONS)})"
        )
    model = FitlineModel(cfg)
    init_weights(model, cfg, generator)
    return model


@torch.no_grad()
def init_weights(model: nn.Module, cfg: ModelConfig, generator: torch.Generator | None) -> None:
    """He init before ReLU/GELU, Xavier before tanh and on the output layer; zero biases.

    A linear model is convex: it starts from zero, which also makes full-batch GD a clean
    check against least squares.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    gain = nn.init.calculate_gain("tanh") if cfg.activation == "tanh" else math.sqrt(2.0)
    for i, layer in enumerate(linears):
        nn.init.zeros_(layer.bias)
        if cfg.model == "linear":
            nn.init.zeros_(layer.weight)
        elif i < len(linears) - 1:
            fan_in = layer.weight.shape[1]
            bound = gain * math.sqrt(3.0 / fan_in)
            nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
        else:
            nn.init.xavier_uniform_(layer.weight, generator=generator)
    # embeddings after the linears (a numeric-only model has none: its draws are unchanged), unit
    # normal like the standardised inputs beside them; random for a linear model too: a zero
    # table and a zero first layer would give each other zero gradients forever
    for table in (m for m in model.modules() if isinstance(m, nn.Embedding)):
        nn.init.normal_(table.weight, 0.0, 1.0, generator=generator)


@torch.no_grad()
def fit_scaling(model: nn.Module, x: np.ndarray, y: np.ndarray | None, scaling: str) -> None:
    """Fit everything the model learns from the train split before training: the input layer's
    medians (a model with a schema: NaN-aware, whatever the scaling), then the mean and std of
    the continuous inputs after imputation, and of the (transformed) regression target
    (identity for `none`).

    Computed in float64; a constant column gets std 1 so it passes through unscaled.
    """
    if scaling not in ("standard", "none"):
        raise ValueError(f"scaling: unknown scaling {scaling!r} (allowed: standard, none)")
    encoder = getattr(model, "encoder", None)
    if encoder is not None:
        encoder.fit(x)
    if scaling == "none":
        return
    if encoder is None or encoder.n_scaled:  # (a schema of categories alone has nothing to scale)
        mean, std = column_moments(x, transform=None if encoder is None else encoder.continuous_numpy)
        model.x_mean.copy_(torch.from_numpy(mean))
        model.x_std.copy_(torch.from_numpy(np.where(std > 0, std, 1.0)))
    if getattr(model, "task", None) == "regression" and y is not None:
        y64 = np.asarray(y, dtype=np.float64)
        transform = getattr(model, "target_transform", "none")
        if transform != "none":
            y64 = TARGET_TRANSFORMS[transform][0](torch.from_numpy(y64)).numpy()
        y_std = float(y64.std())
        model.y_mean.fill_(float(y64.mean()))
        model.y_std.fill_(y_std if y_std > 0 else 1.0)


def column_moments(x: np.ndarray, chunk_rows: int = 1 << 18,
                   transform: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (population) of x, rows x columns, in float64; of
    transform(rows) instead when given (computed chunk by chunk, twice: never the whole split).

    Two passes over chunks of rows: a float64 copy of the whole split (and numpy's float64
    x - mean temporary) made fitting the scaling the train stage's peak memory (README, Scale)."""
    x = np.asarray(x)
    n, chunks = len(x), range(0, len(x), chunk_rows)
    rows = (lambda i: x[i : i + chunk_rows]) if transform is None else (lambda i: transform(x[i : i + chunk_rows]))
    mean = sum(rows(i).sum(axis=0, dtype=np.float64) for i in chunks) / n
    var = sum(np.square(rows(i) - mean).sum(axis=0) for i in chunks) / n
    return mean, np.sqrt(var)


FORWARD_CHUNK = 65536  # rows per forward pass over a whole split: bounds activation memory


def forward_chunks(model: nn.Module, x: np.ndarray | torch.Tensor,
                   chunk_rows: int = FORWARD_CHUNK) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows, model(x[rows])) a chunk at a time, without autograd; a numpy `x` goes to the
    model's device chunk by chunk (parquet-backed arrays are read-only: those are copied)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(x), chunk_rows):
            rows = slice(i, i + chunk_rows)
            chunk = x[rows]
            if isinstance(chunk, np.ndarray):
                chunk = torch.from_numpy(chunk if chunk.flags.writeable else chunk.copy()).to(device)
            yield rows, model(chunk)


def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Model outputs for raw features, in chunks on the model's device, as float64 numpy: what
    the train stage writes to models/outputs.npz and what a sweep trial scores."""
    model.eval()
    out = [y.float().cpu().numpy() for _, y in forward_chunks(model, x)]
    return np.concatenate(out).astype(np.float64) if out else np.empty((0,))


def weight_tensors(model: nn.Module) -> list[nn.Parameter]:
    """The parameters a penalty applies to: weight matrices and embedding tables, not biases
    (nor scaling buffers)."""
    return [p for p in model.parameters() if p.ndim >= 2]


def save_model(path: str | Path, model: nn.Module, cfg: ModelConfig) -> None:
    """torch.save {"state_dict", "config"} atomically; loads with torch.load(weights_only=True)."""
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # a file object, not the path: torch names the archive's inner folder after the file,
        # and the temporary name is random; this way the same model gives the same bytes
        torch.save({"state_dict": state, "config": cfg.to_dict()}, f)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The saved model (eval mode) and its config; a missing or corrupt file is a DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: model file not found (run the train stage first)")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a readable model file ({first_line(exc)})") from None
    except Exception as exc:  # torch raises pickle.UnpicklingError subclasses for wrong content
        raise DataError(f"{path}: not a readable model file ({type(exc).__name__})") from None
    if not isinstance(blob, dict) or not {"state_dict", "config"} <= blob.keys():
        raise DataError(f"{path}: not a fitline model file (expected keys state_dict and config)")
    cfg = ModelConfig.from_dict(blob["config"], path)
    try:
        model = build_model(cfg)
        model.load_state_dict(blob["state_dict"])
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise DataError(f"{path}: model does not match its config ({first_line(exc)})") from None
    model.to(map_location).eval()
    return model, cfg
