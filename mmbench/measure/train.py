"""Training: fit on train, select the best epoch on validation only (early stopping optional), evaluate once on test.

The test split is never looked at while training or selecting: ``fit`` does not receive it.
"""
from __future__ import annotations

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
    # Did it learn at all (see ``did_not_learn``)? The validation score of the best constant prediction with its
    # standard error (None where the split is too small to give one), and the training split's task loss of the
    # untrained model, the kept one and the constant, measured alike. Each epoch's mean loss is for the record only.
    initial_loss: float | None = None
    epoch_losses: list[float] = field(default_factory=list)
    val_chance: float | None = None
    val_chance_se: float | None = None
    trained_loss: float | None = None
    train_chance_loss: float | None = None  # the best constant prediction's loss on the training split
    # The kept model's validation loss (the task's loss, per row) against the best constant prediction's, and the
    # standard error of their per-row difference: a paired test that sees learning the accuracy's SE hides.
    val_loss: float | None = None
    val_chance_loss: float | None = None
    val_loss_gain_se: float | None = None
    val_rows: int | None = None
    optimizer_impl: str | None = None  # "fused", "foreach" or "for-loop" (``optimizer_impl``)


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


EVAL_ROWS = 4096  # rows a no-grad pass (validation, the train split's loss) takes at once: few calls, bounded memory


def _rows(ts: list[torch.Tensor] | None, idx) -> list[torch.Tensor] | None:
    return None if ts is None else [t[idx] for t in ts]


def loss_with_aux(model: nn.Module, xs: list[torch.Tensor], y: torch.Tensor, loss_fn,
                  masks: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The task loss plus the fusion method's own objective (contrastive, correlation, reconstruction), if any."""
    loss = loss_fn(_call(model, xs, masks), y)
    aux = model.aux_loss() if hasattr(model, "aux_loss") else None
    return loss if aux is None else loss + aux


@torch.no_grad()
def outputs(model: nn.Module, xs: list[torch.Tensor], batch_size: int = EVAL_ROWS,
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

    def optimizer(self, params=None) -> torch.optim.Optimizer:
        """A new optimizer of the spec's kind, learning rate and weight decay (no state until its first step) over
        the model's parameters (or ``params``): the fused implementation (one kernel for every parameter's update)
        where the installed torch has it for these parameters, else torch's default (``optimizer_impl`` says which)."""
        kind = OPTIMIZERS[self.spec.optimizer]
        params = list(self.model.parameters() if params is None else params)
        try:
            return kind(params, lr=self.spec.lr, weight_decay=self.spec.weight_decay, fused=True)
        except (RuntimeError, ValueError, TypeError):  # no fused kernel for this device, dtype or torch
            return kind(params, lr=self.spec.lr, weight_decay=self.spec.weight_decay)

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


def optimizer_impl(opt: torch.optim.Optimizer) -> str:
    """Which implementation of the optimizer's update ran: fused, foreach (torch's default on CUDA) or for-loop."""
    if opt.defaults.get("fused"):
        return "fused"
    foreach = opt.defaults.get("foreach")
    if foreach is None:  # torch's own choice: foreach where every parameter is a CUDA tensor
        foreach = all(p.is_cuda for g in opt.param_groups for p in g["params"])
    return "foreach" if foreach else "for-loop"


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


class BestWeights:
    """The best epoch's weights, copied into buffers allocated once (a deep copy of the state each time allocates
    and walks the module tree); the live state is read again at each copy, so a module that replaces a buffer is
    still followed."""

    def __init__(self, model: nn.Module):
        self.model, self.score, self.epoch, self.out = model, -math.inf, 0, None
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}  # the untrained weights

    def keep(self, score: float, epoch: int, out: torch.Tensor | None = None) -> None:
        """This epoch is the best so far: copy its weights (and keep its validation outputs)."""
        self.score, self.epoch, self.out = score, epoch, out
        for k, v in self.model.state_dict().items():
            kept = self.state.get(k)
            if kept is not None and kept.shape == v.shape and kept.dtype == v.dtype:
                kept.copy_(v)
            else:
                self.state[k] = v.detach().clone()

    def restore(self) -> None:
        self.model.load_state_dict(self.state)


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
    best = BestWeights(model)
    times: list[float] = []
    n = len(ytr)
    epoch = 0
    initial_loss = _mean_loss(model, xtr, ytr, mtr, loss_fn, EVAL_ROWS, precision, device)
    epoch_losses = []
    sizes = torch.tensor([min(spec.batch_size, n - i) for i in range(0, n, spec.batch_size)], dtype=torch.float64,
                         device=device)
    for epoch in range(1, spec.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=gen).to(device)
        losses = []  # on the device: read once per epoch, not once per step (a host sync on a GPU)
        with step.flags():  # TF32 held through forward and backward alike
            for i in range(0, n, spec.batch_size):
                idx = order[i:i + spec.batch_size]
                losses.append(step(opt, _rows(xtr, idx), ytr[idx], _rows(mtr, idx)).detach())
        per_step = torch.stack(losses).double()
        bad = (~torch.isfinite(per_step)).nonzero()
        if len(bad):  # a NaN stops the trial at the epoch it happened, as a per-step check would
            raise NonFiniteLoss(f"loss became {per_step[bad[0, 0]].item()} at epoch {epoch}")
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
        epoch_losses.append((per_step * sizes).sum().item() / n)
        if val_score > best.score:  # model selection on validation only
            best.keep(val_score, epoch, out)
        elif spec.patience is not None and epoch - best.epoch >= spec.patience:
            break
    best.restore()
    trained_loss = _mean_loss(model, xtr, ytr, mtr, loss_fn, EVAL_ROWS, precision, device)
    chance, chance_se = chance_score(ytr, yva, target, spec.loss)
    out = best.out  # the kept epoch's validation outputs
    val_loss, val_chance_loss, gain_se = loss_against_chance(out, ytr, yva, target, spec.loss)
    return model, FitInfo(
        best.epoch, epoch, best.score, float(sum(times)), times, initial_loss=initial_loss,
        epoch_losses=epoch_losses, val_chance=chance, val_chance_se=chance_se, trained_loss=trained_loss,
        train_chance_loss=constant_losses(ytr, ytr, target, spec.loss, out.shape[1]).mean().item(),
        val_loss=val_loss, val_chance_loss=val_chance_loss, val_loss_gain_se=gain_se, val_rows=len(yva),
        optimizer_impl=optimizer_impl(opt))


@torch.no_grad()
def _mean_loss(model, xs, y, masks, loss_fn, batch_size: int, precision: str, device: str) -> float:
    """The model's task loss (no method's own objective) over the whole train split, the untrained model's and the
    kept one's alike (eval mode: no batch-norm statistics move, no random number is drawn, so the training that
    follows is exactly as without it)."""
    model.eval()
    total = 0.0
    for i in range(0, len(y), batch_size):
        idx = slice(i, i + batch_size)
        with precision_region(precision, device):
            total = total + loss_fn(_call(model, _rows(xs, idx), _rows(masks, idx)), y[idx]).double() * len(y[idx])
    return float(total) / len(y)  # one host read, not one a batch


# Did a seed learn (``did_not_learn``)? Validation decides where it can tell, at CHANCE_SE standard errors from the
# best constant prediction; where it cannot, the kept model's training loss must be LOSS_FALL below the untrained
# model's and the constant's. Under MIN_VAL_ROWS validation rows there is no SE (the normal approximation fails);
# under AT_CHANCE_ROWS a score within 2 SE of chance does not show that nothing was learned (the band is wider than
# ±0.05 accuracy around an even chance: 0.6 on 100 rows is inside it).
CHANCE_SE = 2.0
LOSS_FALL = 0.01
MIN_VAL_ROWS = 30
AT_CHANCE_ROWS = 400


def chance_score(ytr: torch.Tensor, yva: torch.Tensor, target: str, loss: str = "auto") -> tuple[float, float | None]:
    """The validation score (as ``fit`` selects on it) of the best prediction that ignores the inputs, and its
    standard error over validation rows: the majority class's share (binomial SE), or −loss of predicting the
    train mean (median for L1) with the SE of the per-row losses. The SE is None under MIN_VAL_ROWS rows."""
    n = len(yva)
    if target == "classification":
        p = torch.bincount(yva.long().cpu()).max().item() / n
        return p, math.sqrt(p * (1 - p) / n) if n >= MIN_VAL_ROWS else None
    ytr, yva = ytr.double().cpu(), yva.double().cpu()
    per_row = (yva - ytr.median()).abs() if loss == "l1" else (yva - ytr.mean()) ** 2
    return -per_row.mean().item(), (per_row.std().item() / math.sqrt(n)) if n >= MIN_VAL_ROWS else None


def constant_losses(ytr: torch.Tensor, y: torch.Tensor, target: str, loss: str, classes: int) -> torch.Tensor:
    """Per row of ``y``, the task loss of the best prediction that ignores the inputs: the training split's class
    shares (add-one smoothed, so that a class train lacks costs a finite loss), or its mean (median for L1)."""
    y = y.cpu()
    if target == "classification":
        counts = torch.bincount(ytr.long().cpu(), minlength=classes).double() + 1
        return -torch.log(counts / counts.sum())[y.long()]
    ytr, y = ytr.double().cpu(), y.double()
    return (y - ytr.median()).abs() if loss == "l1" else (y - ytr.mean()) ** 2


def loss_against_chance(out: torch.Tensor, ytr: torch.Tensor, yva: torch.Tensor, target: str,
                        loss: str = "auto") -> tuple[float, float, float | None]:
    """(the model's mean validation task loss, the best constant prediction's, the SE of their per-row difference;
    None under MIN_VAL_ROWS rows)."""
    out, yva = out.double().cpu(), yva.cpu()
    if target == "classification":
        model = nn.functional.cross_entropy(out, yva.long(), reduction="none")
    else:
        model = (out[:, 0] - yva.double()).abs() if loss == "l1" else (out[:, 0] - yva.double()) ** 2
    constant = constant_losses(ytr, yva, target, loss, out.shape[1])
    n = len(yva)
    se = (constant - model).std().item() / math.sqrt(n) if n >= MIN_VAL_ROWS else None
    return model.mean().item(), constant.mean().item(), se


def did_not_learn(info: FitInfo, target: str = "classification") -> str:
    """Why this seed learned nothing ('' when it did). The trial is still measured and kept; its row says so.

    Validation decides where it can tell (MIN_VAL_ROWS rows or more), against the best constant prediction:
    - learned, whatever the training loss did, when the best validation score (accuracy; −loss for regression) is
      beyond CHANCE_SE standard errors of the constant's, or the kept model's validation loss is below the
      constant's by more than CHANCE_SE SE of their per-row difference (a paired test: it sees a real gain that the
      score's SE hides, as on a regression target whose mean is hard to beat);
    - did not learn when the validation loss is above the constant's by that margin: whatever it fit (the reason
      says whether the training loss fell, as when a model memorises noise) does not carry to new data;
    - did not learn when both are within the margins on a split of AT_CHANCE_ROWS rows or more: it is at chance,
      whatever its training loss did.
    Where validation cannot tell (within the margins on a smaller split, or under MIN_VAL_ROWS rows, which give no
    SE), the training loss decides: the kept model's task loss on the whole training split, in eval mode, must be
    LOSS_FALL below both the untrained model's and the constant's, measured the same way — not an epoch's running
    mean, which averages the steps taken while learning. A constant output never gets below the constant's."""
    loss, fell, rows = "", None, info.val_rows or 0
    if info.initial_loss is not None and info.trained_loss is not None:
        bar = min(info.initial_loss, info.train_chance_loss if info.train_chance_loss is not None else math.inf)
        fell = info.trained_loss < bar - LOSS_FALL * abs(bar)
        loss = (f"training loss {'fell' if fell else 'did not fall'} ({info.initial_loss:.4g} untrained, "
                f"{info.trained_loss:.4g} trained"
                + (f", {info.train_chance_loss:.4g} constant" if info.train_chance_loss is not None else "") + ")")
    what = "accuracy" if target == "classification" else "score (−loss)"
    if info.val_chance is not None and info.val_chance_se is not None:
        if info.val_score > info.val_chance + CHANCE_SE * info.val_chance_se:
            return ""
        score = (f"best validation {what} {info.val_score:.4g} is within {CHANCE_SE:g} SE of chance "
                 f"{info.val_chance:.4g} (SE {info.val_chance_se:.2g})")
        if info.val_loss is not None and info.val_chance_loss is not None and info.val_loss_gain_se is not None:
            gain, margin = info.val_chance_loss - info.val_loss, CHANCE_SE * info.val_loss_gain_se
            if gain > margin:
                return ""
            if gain < -margin:
                return (f"{score} and its validation loss {info.val_loss:.4g} is worse than the constant "
                        f"prediction's {info.val_chance_loss:.4g} by more than {CHANCE_SE:g} SE "
                        f"({info.val_loss_gain_se:.2g})" + (f"; {loss}" if loss else ""))
            score += (f", its validation loss {info.val_loss:.4g} within {CHANCE_SE:g} SE of the constant's "
                      f"{info.val_chance_loss:.4g}")
        if rows >= AT_CHANCE_ROWS or fell is False:
            return score + (f"; {loss}" if loss else "") + (", validation did not follow" if fell else "")
        return ""  # a small split's band holds a model that learned a little: its training loss fell
    return "" if fell is not False else f"{loss}; validation cannot tell (too few rows for an SE)"


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
