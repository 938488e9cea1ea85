"""Accuracy: train on the train split, keep the best-validation epoch, evaluate it once on test."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from mmbench.data.registry import Split
from mmbench.measure.precision import region as precision_region


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or inf: a trial status, not a crash."""


@dataclass(frozen=True)
class SeedScore:
    seed: int
    test_accuracy: float
    test_macro_f1: float
    val_accuracy: float
    best_epoch: int
    train_time_s: float


def _tensors(split: Split, device: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    return [torch.as_tensor(x, device=device) for x in split.xs], torch.as_tensor(split.y, device=device)


def loss_with_aux(model: nn.Module, xs: list[torch.Tensor], y: torch.Tensor, loss_fn) -> torch.Tensor:
    """The task loss plus the fusion method's own objective (contrastive, correlation, reconstruction), if any."""
    loss = loss_fn(model(xs), y)
    aux = model.aux_loss()
    return loss if aux is None else loss + aux


@torch.no_grad()
def predict(model: nn.Module, xs: list[torch.Tensor], batch_size: int = 4096) -> torch.Tensor:
    model.eval()
    n = xs[0].shape[0]
    return torch.cat([model([x[i:i + batch_size] for x in xs]).argmax(1) for i in range(0, n, batch_size)])


def macro_f1(pred: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    f1s = []
    for c in range(num_classes):
        tp = np.sum((pred == c) & (y == c))
        fp, fn = np.sum((pred == c) & (y != c)), np.sum((pred != c) & (y == c))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(f1s))


def train_and_evaluate(make_model: Callable[[], nn.Module], train: Split, val: Split, test: Split, num_classes: int,
                       *, seed: int, epochs: int, batch_size: int, lr: float, weight_decay: float = 0.0,
                       optimizer: str = "adam", device: str = "cpu", precision: str = "fp32") -> SeedScore:
    """One seed: model init, batch order and everything random come from ``seed``."""
    torch.manual_seed(seed)
    model = make_model().to(device)
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[optimizer]
    opt = opt_cls(model.parameters(), lr=lr, weight_decay=weight_decay)
    (xtr, ytr), (xva, yva), (xte, yte) = (_tensors(s, device) for s in (train, val, test))
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    # fp16 gradients underflow without loss scaling; the scaler is a no-op for every other precision.
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=precision == "fp16" and device.startswith("cuda"))
    best = (-1.0, 0, copy.deepcopy(model.state_dict()))
    start = time.perf_counter()
    n = len(ytr)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            with precision_region(precision, device):
                loss = loss_with_aux(model, [x[idx] for x in xtr], ytr[idx], loss_fn)
            if not math.isfinite(loss.item()):
                raise NonFiniteLoss(f"loss became {loss.item()} at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        val_acc = (predict(model, xva) == yva).float().mean().item()
        if val_acc > best[0]:  # model selection on validation only; test is touched once, below
            best = (val_acc, epoch, copy.deepcopy(model.state_dict()))
    train_time = time.perf_counter() - start
    model.load_state_dict(best[2])
    pred = predict(model, xte)
    acc = (pred == yte).float().mean().item()
    f1 = macro_f1(pred.cpu().numpy(), yte.cpu().numpy(), num_classes)
    return SeedScore(seed, acc, f1, best[0], best[1], train_time)
