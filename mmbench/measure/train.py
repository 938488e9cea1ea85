"""Training: fit on train, select the best epoch on validation only (early stopping optional), evaluate once on test.

The test split is never looked at while training or selecting: ``fit`` does not receive it.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, get_args

import numpy as np
import torch
from torch import nn

from mmbench.data.registry import Split
from mmbench.measure import metrics
from mmbench.measure.precision import autocast, grad_scaler, matmul_flags
from mmbench.measure.precision import region as precision_region
from mmbench.model import masks_from_lengths
from mmbench.suite import TrainSpec

LOSSES = get_args(TrainSpec.model_fields["loss"].annotation)  # the schema's choices


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or inf: a trial status, not a crash."""


@dataclass
class FitInfo:
    best_epoch: int
    epochs_run: int
    val_score: float            # the selection score of the kept epoch: accuracy, or −loss for regression
    train_time_s: float
    epoch_times_s: list[float] = field(default_factory=list)
    # Did it learn at all? The untrained model's training loss, each epoch's mean training loss, and
    # the validation score of the best constant prediction with its standard error (see ``did_not_learn``).
    initial_loss: float | None = None
    epoch_losses: list[float] = field(default_factory=list)
    val_chance: float | None = None
    val_chance_se: float | None = None


@dataclass(frozen=True)
class SeedScore:
    seed: int
    test: dict[str, float]      # metric name -> value, on the test split, for the best-validation epoch
    best_epoch: int
    epochs_run: int
    val_score: float
    train_time_s: float
    epoch_time_s: float         # mean over the epochs run (validation pass included)


def tensors(split: Split, device: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    return [torch.as_tensor(x, device=device) for x in split.xs], torch.as_tensor(split.y, device=device)


def split_masks(split: Split, device: str) -> list[torch.Tensor] | None:
    """Padded sequences: per modality a (N, T_m) boolean mask, True = valid step; None when nothing is padded."""
    if split.lengths is None:
        return None
    return masks_from_lengths([torch.as_tensor(n, device=device) for n in split.lengths],
                              [x.shape[1] for x in split.xs])


def _call(model: nn.Module, xs: list[torch.Tensor], masks: list[torch.Tensor] | None) -> torch.Tensor:
    return model(xs) if masks is None else model(xs, masks)  # models of vector tasks never see masks


def _rows(ts: list[torch.Tensor] | None, idx) -> list[torch.Tensor] | None:
    return None if ts is None else [t[idx] for t in ts]


def loss_with_aux(model: nn.Module, xs: list[torch.Tensor], y: torch.Tensor, loss_fn,
                  masks: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The task loss plus the fusion method's own objective (contrastive, correlation, reconstruction), if any."""
    loss = loss_fn(_call(model, xs, masks), y)
    aux = model.aux_loss() if hasattr(model, "aux_loss") else None
    return loss if aux is None else loss + aux


@torch.no_grad()
def outputs(model: nn.Module, xs: list[torch.Tensor], batch_size: int = 4096,
            masks: list[torch.Tensor] | None = None, precision: str = "fp32") -> torch.Tensor:
    """The model's raw outputs (logits, or the regression value in column 0), in eval mode, batched, at
    ``precision`` (a model trained in bf16 is validated and tested in bf16, as it would be deployed)."""
    model.eval()
    n = xs[0].shape[0]
    with precision_region(precision, str(xs[0].device)):
        return torch.cat([_call(model, _rows(xs, slice(i, i + batch_size)), _rows(masks, slice(i, i + batch_size)))
                          for i in range(0, n, batch_size)])


def predict(model: nn.Module, xs: list[torch.Tensor], batch_size: int = 4096,
            masks: list[torch.Tensor] | None = None, precision: str = "fp32") -> torch.Tensor:
    return outputs(model, xs, batch_size, masks=masks, precision=precision).argmax(1)


def loss_function(target: str, loss: str = "auto") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss of TrainSpec.loss for the task's target: regression losses compare output column 0 with the
    (N,) targets."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got '{loss}'")
    if target == "classification":
        if loss not in ("auto", "cross_entropy"):
            raise ValueError(f"loss '{loss}' is for regression; a classification task takes cross_entropy")
        return nn.CrossEntropyLoss()
    if loss == "cross_entropy":
        raise ValueError("cross_entropy is for classification; a regression task takes mse or l1")
    fn = nn.L1Loss() if loss == "l1" else nn.MSELoss()
    return lambda out, y: fn(out[:, 0], y)


OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


@dataclass(frozen=True)
class TrainStep:
    """One training step, the one ``fit`` takes and the one a trial times (trial.py): gradients zeroed, forward and
    loss under autocast, backward outside it (in the forward's dtypes), scaled when fp16 on CUDA, the optimizer's
    step. The TF32 flags (``flags()``) are held by the caller around as many steps as it takes, so that a timed step
    does not time setting them. The optimizer is the caller's too (``optimizer()`` makes one): its state is what a
    fresh measurement must not inherit."""
    model: nn.Module
    spec: TrainSpec
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    precision: str = "fp32"
    device: str = "cpu"
    scaler: torch.amp.GradScaler | None = None  # fp16 on CUDA (gradients underflow without it); else None

    def optimizer(self) -> torch.optim.Optimizer:
        """A new optimizer of the spec's kind, learning rate and weight decay (no state until its first step)."""
        return OPTIMIZERS[self.spec.optimizer](self.model.parameters(), lr=self.spec.lr,
                                               weight_decay=self.spec.weight_decay)

    def __call__(self, opt: torch.optim.Optimizer, xs: list[torch.Tensor], y: torch.Tensor,
                 masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Take the step; returns the loss, not synchronised (``.item()`` it to check it)."""
        opt.zero_grad(set_to_none=True)
        with autocast(self.precision, self.device):
            loss = loss_with_aux(self.model, xs, y, self.loss_fn, masks)
        if self.scaler is None:
            loss.backward()
            opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()
        return loss

    def flags(self):
        return matmul_flags(self.precision, self.device)


def training_step(model: nn.Module, spec: TrainSpec, target: str, precision: str = "fp32",
                  device: str = "cpu") -> TrainStep:
    """The training step of a suite's ``train:`` block for this task: its loss (``loss_function``) and optimizer, at
    ``precision`` on ``device``."""
    return TrainStep(model, spec, loss_function(target, spec.loss), precision, device, grad_scaler(precision, device))


def score(out: np.ndarray, y: np.ndarray, target: str, num_classes: int, kind: str = "") -> dict[str, float]:
    """Every metric of the task from raw outputs: classification (acc, f1), regression (mae, mse, corr), and the
    affect set (acc2, acc7, f1, mae, mse, corr) when the dataset says ``metrics: affect``."""
    if target == "classification":
        return metrics.classification(out, y, num_classes)
    return metrics.affect(out[:, 0], y) if kind == "affect" else metrics.regression(out[:, 0], y)


def fit(make_model: Callable[[], nn.Module], train: Split, val: Split, spec: TrainSpec, *, seed: int,
        target: str = "classification", device: str = "cpu", precision: str = "fp32",
        on_epoch: Callable[[int, float], None] | None = None) -> tuple[nn.Module, FitInfo]:
    """Train one seed as ``spec`` says (model init, batch order and everything random come from ``seed``); return the
    model holding the best-validation epoch's weights. With ``spec.patience``, stop after that many epochs without a
    better one. ``on_epoch(epoch, validation score)`` after each epoch (tuning's pruner; it may raise to stop)."""
    torch.manual_seed(seed)
    model = make_model().to(device)
    step = training_step(model, spec, target, precision, device)
    opt, loss_fn = step.optimizer(), step.loss_fn
    (xtr, ytr), (xva, yva) = tensors(train, device), tensors(val, device)
    mtr, mva = split_masks(train, device), split_masks(val, device)
    if target == "regression":
        ytr, yva = ytr.float(), yva.float()
    gen = torch.Generator().manual_seed(seed)
    best = (-math.inf, 0, copy.deepcopy(model.state_dict()))
    times: list[float] = []
    n = len(ytr)
    epoch = 0
    initial_loss = _mean_loss(model, xtr, ytr, mtr, loss_fn, spec.batch_size, precision, device)
    epoch_losses = []
    for epoch in range(1, spec.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for i in range(0, n, spec.batch_size):
            idx = order[i:i + spec.batch_size]
            with step.flags():  # TF32 held through forward and backward alike
                batch_loss = step(opt, _rows(xtr, idx), ytr[idx], _rows(mtr, idx)).item()
            if not math.isfinite(batch_loss):
                raise NonFiniteLoss(f"loss became {batch_loss} at epoch {epoch}")
            total += batch_loss * len(idx)
        out = outputs(model, xva, masks=mva, precision=precision).float()
        if target == "classification":
            val_score = (out.argmax(1) == yva).float().mean().item()
        else:
            val_score = -loss_fn(out, yva).item()
            if not math.isfinite(val_score):
                raise NonFiniteLoss(f"validation loss became {-val_score} at epoch {epoch}")
        if on_epoch is not None:  # (only tuning's fits pass one: their epoch times are not reported)
            on_epoch(epoch, val_score)
        times.append(time.perf_counter() - t0)
        epoch_losses.append(total / n)
        if val_score > best[0]:  # model selection on validation only
            best = (val_score, epoch, copy.deepcopy(model.state_dict()))
        elif spec.patience is not None and epoch - best[1] >= spec.patience:
            break
    model.load_state_dict(best[2])
    model.eval()
    chance, chance_se = chance_score(ytr, yva, target, spec.loss)
    return model, FitInfo(best[1], epoch, best[0], float(sum(times)), times, initial_loss, epoch_losses,
                          chance, chance_se)


@torch.no_grad()
def _mean_loss(model, xs, y, masks, loss_fn, batch_size: int, precision: str, device: str) -> float:
    """The untrained model's training loss over the whole train split (eval mode: no batch-norm statistics move, no
    random number is drawn, so the training that follows is exactly as without it)."""
    model.eval()
    total = 0.0
    for i in range(0, len(y), batch_size):
        idx = slice(i, i + batch_size)
        with precision_region(precision, device):
            total += loss_with_aux(model, _rows(xs, idx), y[idx], loss_fn, _rows(masks, idx)).item() * len(y[idx])
    return total / len(y)


# A trial "did not learn" when its best validation score is within this many standard errors of the best constant
# prediction's, or when no epoch's mean training loss fell below the untrained model's by LOSS_FALL of its size.
CHANCE_SE = 2.0
LOSS_FALL = 0.01


def chance_score(ytr: torch.Tensor, yva: torch.Tensor, target: str, loss: str = "auto") -> tuple[float, float]:
    """The validation score (as ``fit`` selects on it) of the best prediction that ignores the inputs, and its
    standard error over validation rows: the majority class's share (binomial SE), or −loss of predicting the
    train mean (median for L1) with the SE of the per-row losses."""
    n = len(yva)
    if target == "classification":
        p = torch.bincount(yva.long().cpu()).max().item() / n
        return p, math.sqrt(p * (1 - p) / n)
    ytr, yva = ytr.double().cpu(), yva.double().cpu()
    per_row = (yva - ytr.median()).abs() if loss == "l1" else (yva - ytr.mean()) ** 2
    return -per_row.mean().item(), (per_row.std().item() / math.sqrt(n)) if n > 1 else 0.0


def did_not_learn(info: FitInfo, target: str = "classification") -> str:
    """Why this seed learned nothing ('' when it did): validation never left chance, or the training loss did not
    fall. The trial is still measured and kept; its row says so."""
    why = []
    if info.val_chance is not None and info.val_score <= info.val_chance + CHANCE_SE * (info.val_chance_se or 0.0):
        what = "accuracy" if target == "classification" else "score (−loss)"
        why.append(f"best validation {what} {info.val_score:.4g} is within {CHANCE_SE:g} SE of chance "
                   f"{info.val_chance:.4g} (SE {info.val_chance_se:.2g})")
    if info.initial_loss is not None and info.epoch_losses:
        low = min(info.epoch_losses)
        if low >= info.initial_loss - LOSS_FALL * abs(info.initial_loss):
            why.append(f"training loss did not fall ({info.initial_loss:.4g} untrained, lowest epoch mean {low:.4g})")
    return "; ".join(why)


def evaluate_seed(model: nn.Module, info: FitInfo, test: Split, seed: int, target: str, num_classes: int,
                  metric_kind: str, device: str, precision: str = "fp32") -> SeedScore:
    xte, _ = tensors(test, device)
    out = outputs(model, xte, masks=split_masks(test, device), precision=precision).float().cpu().numpy()
    return SeedScore(seed, score(out, np.asarray(test.y), target, num_classes, metric_kind), info.best_epoch,
                     info.epochs_run, info.val_score, info.train_time_s,
                     float(np.mean(info.epoch_times_s)) if info.epoch_times_s else 0.0)


@torch.no_grad()
def embeddings(model: nn.Module, xs: list[torch.Tensor], batch_size: int = 4096,
               precision: str = "fp32") -> list[np.ndarray] | None:
    """Per-modality embeddings from a coordinated method (its fusion's ``embeddings(encoded xs)``), else None."""
    fusion = getattr(model, "fusion", None)
    fn = getattr(fusion, "embeddings", None)
    if not callable(fn) or not hasattr(model, "encoders"):
        return None
    model.eval()
    n = xs[0].shape[0]
    parts = []
    for i in range(0, n, batch_size):
        with precision_region(precision, str(xs[0].device)):
            encoded = [enc(x[i:i + batch_size]) for enc, x in zip(model.encoders, xs)]
            parts.append([e.float().cpu() for e in fn(encoded)])
    return [torch.cat([p[m] for p in parts]).numpy() for m in range(len(parts[0]))]
