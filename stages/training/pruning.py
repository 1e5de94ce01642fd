"""Structured pruning of an MLP's hidden units, and fine-tuning of the smaller network.

Each hidden layer's units are ranked by the norm (export.prune.criterion: l1 or l2) of their
incoming weights, the row of the layer's weight matrix; the lowest round(amount * width) go (at
least one unit stays), with their bias and the matching input columns of the next Linear. The
result is a genuinely smaller FitlineModel: the same config with the smaller `hidden`, the same
raw-row input layer and scaling buffers, built by build_model and loaded with the kept weights,
so it exports to a smaller ONNX graph (no masks, no zeros).

`fine_tune` trains an already-built model for a few epochs with the run's optimizer and loss on
train, early stopping on val: the training loop's own pieces (TrainingSetup, run_epoch,
EarlyStopping), with the model given rather than freshly initialised.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from stages.core.contracts import ModelConfig
from stages.core.errors import DataError
from stages.core.params import PruneCriterion, TrainParams, allowed
from stages.data.splits import Split
from stages.training import distributed, loop
from stages.training.early_stopping import EarlyStopping
from stages.training.models import build_model, set_dropout_generator
from stages.training.optim import make_optimizer, make_penalty_grad
from stages.training.sizing import sized_for

log = logging.getLogger(__name__)

# criterion -> (the layer's weight (out, in) -> one norm per unit (out,))
CRITERIA: dict[PruneCriterion, Callable[[torch.Tensor], torch.Tensor]] = {
    "l1": lambda w: w.abs().sum(dim=1),
    "l2": lambda w: w.square().sum(dim=1).sqrt(),
}


def unit_scores(weight: torch.Tensor, criterion: str) -> torch.Tensor:
    """The norm of each unit's incoming weights (rows of a Linear's weight), in float64."""
    if criterion not in CRITERIA:
        raise ValueError(f"export.prune.criterion: unknown criterion {criterion!r} (allowed: {allowed(PruneCriterion)})")
    return CRITERIA[criterion](weight.detach().to(torch.float64))  # type: ignore[index]


def units_to_keep(weight: torch.Tensor, amount: float, criterion: str) -> torch.Tensor:
    """Indices (ascending) of the units that stay: all but the round(amount * width) with the
    lowest norms, at least one; ties go to the lower index."""
    width = weight.shape[0]
    keep = max(1, width - round(amount * width))
    scores = unit_scores(weight, criterion)
    order = torch.sort(-scores, stable=True).indices  # highest norm first, stable on ties
    return torch.sort(order[:keep]).values


def hidden_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """(state_dict prefix, layer) of the network's Linears, in order (the last is the output)."""
    return [(f"net.{name}", m) for name, m in model.net.named_children() if isinstance(m, nn.Linear)]


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


@torch.no_grad()
def prune_model(model: nn.Module, cfg: ModelConfig, amount: float,
                criterion: str = "l1") -> tuple[nn.Module, ModelConfig]:
    """The smaller model (eval mode, CPU) and its config: `amount` of each hidden layer's units
    removed by `criterion`, the next layer's matching input columns with them."""
    if cfg.model != "mlp" or not cfg.hidden:
        raise DataError(f"export.prune.amount: {amount:g} prunes hidden units; a {cfg.model!r} model has none "
                        "(set export.prune.amount to 0)")
    if not 0 <= amount < 1:
        raise ValueError(f"export.prune.amount: {amount:g} must be in [0, 1)")
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    layers = hidden_linears(model)
    hidden: list[int] = []
    kept_inputs: torch.Tensor | None = None  # the previous hidden layer's kept units
    for i, (prefix, layer) in enumerate(layers):
        weight = state[f"{prefix}.weight"]
        if kept_inputs is not None:
            weight = weight[:, kept_inputs]
        if i < len(layers) - 1:
            keep = units_to_keep(state[f"{prefix}.weight"], amount, criterion)
            weight, state[f"{prefix}.bias"] = weight[keep], state[f"{prefix}.bias"][keep]
            hidden.append(len(keep))
            kept_inputs = keep
        state[f"{prefix}.weight"] = weight.contiguous()
    small_cfg = dataclasses.replace(cfg, hidden=hidden)
    small = build_model(small_cfg)
    small.load_state_dict(state)
    return small.eval(), small_cfg


def fine_tune(model: nn.Module, cfg: ModelConfig, p: TrainParams, splits: dict[str, Split],
              epochs: int) -> tuple[nn.Module, dict[str, Any]]:
    """Train the built (already scaled) `model` for at most `epochs` epochs with train's
    optimizer, loss, penalty and batch size on splits['train'], early stopping on splits['val']
    (train.early_stopping; the best epoch's weights come back). The model comes back on CPU in
    eval mode, with a small summary of the run."""
    # the schedule runs over the fine-tuning epochs, without warmup (a new, short run)
    p = sized_for(p, len(splits["train"].y)).model_copy(update={"epochs": epochs, "warmup_epochs": 0})
    device = loop.resolve_device(p.device)
    loop.check_splits(splits, cfg)
    precision, autocast = loop.precision_mode(p, device)
    model = model.to(device)
    gens = {"cpu": torch.Generator().manual_seed(p.seed)}
    if cfg.dropout > 0:
        gens["dropout"] = torch.Generator(device=device).manual_seed(p.seed + 1)
        set_dropout_generator(model, gens["dropout"])
    x_train = loop.prepare_split(model, loop.on_device(splits["train"].x, device))
    x_val = loop.prepare_split(model, loop.on_device(splits["val"].x, device))
    y_train, y_val = loop.on_device(splits["train"].y, device), loop.on_device(splits["val"].y, device)
    y_fit, train_loss_fn, eval_loss_fn = loop.training_objective(p, cfg, model, y_train)
    n = len(x_train)
    batch = n if p.optimizer == "gd" else min(p.batch_size, n)
    s = loop.TrainingSetup(
        params=p, device=device, cfg=cfg, precision=precision, autocast=autocast, gens=gens, model=model,
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, y_fit=y_fit,
        train_loss_fn=train_loss_fn, eval_loss_fn=eval_loss_fn, optimizer=make_optimizer(p, model.parameters()),
        penalty_grad=make_penalty_grad(p), batch=batch, sharded=distributed.ShardedTraining(model, n, batch, device),
    )
    stopper = EarlyStopping(p.early_stopping.patience, p.early_stopping.min_delta)
    # epoch 0: the pruned model before any fine-tuning is a candidate too
    start_val = loop.evaluate_loss(model, x_val, y_val, eval_loss_fn, True)
    stopper.update(0, start_val, model)
    history = []
    for epoch in range(epochs):
        rec = loop.run_epoch(s, epoch)
        history.append(rec)
        if stopper.update(rec["epoch"], rec["val_loss"], model):
            break
    restored = stopper.restore_best(model)
    set_dropout_generator(model, None)
    model.to("cpu").eval()
    after = stopper.best_loss if restored or not history else history[-1]["val_loss"]
    log.info("fine-tuned the pruned model %d epochs: val loss %.4g -> %.4g (best epoch %d)", len(history),
             start_val, after, stopper.best_epoch)
    return model, {"epochs_run": len(history), "best_epoch": stopper.best_epoch, "restored_best": restored,
                   "val_loss_before": start_val, "val_loss_after": after}
