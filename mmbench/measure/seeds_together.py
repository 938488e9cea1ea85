"""Seeds trained together: the seeds of one configuration as one vectorised model (``torch.func.stack_module_state``
+ ``vmap``), each seed with its own initialisation, its own batch order and its own best epoch, exactly as ``fit``
draws them one by one. One step then updates every seed: on a small model the per-step overheads (dispatch, the
optimizer, Python) are paid once for all seeds instead of once per seed.

Adam, AdamW and SGD update every element on its own, so one optimizer over the stacked parameters is each seed's
own optimizer. Where a model cannot be vectorised so that each seed gets what it would alone, the seeds train one by
one with ``fit`` and ``why_one_by_one`` says why (the row's ``seeds_trained``).
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from mmbench.data.registry import Split
from mmbench.measure import train as T
from mmbench.methods.base import Fusion
from mmbench.model import FusionModel
from mmbench.suite import TrainSpec

RANDOM = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def why_one_by_one(model: nn.Module, seeds: list[int], train: Split, precision: str) -> str:
    """Why these seeds cannot train together ('' when they can)."""
    if len(seeds) < 2:
        return "one seed"
    if not isinstance(model, FusionModel) or not isinstance(model.fusion, Fusion) \
            or not type(model.fusion).__module__.startswith("mmbench."):
        return "a user's module (its forward may keep state or branch on data)"
    if type(model.fusion).aux_loss is not Fusion.aux_loss:
        return "the method has its own objective (aux_loss keeps state from the forward)"
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return "batch normalisation (its running statistics change in training)"
        if isinstance(m, RANDOM) and m.p > 0:
            return "dropout (each seed's random draws would differ from its own run)"
    if train.lengths is not None:
        return "padded sequences (masks)"
    if precision != "fp32":
        return f"precision {precision}"
    return ""


def fit_seeds(make_model: Callable[[], nn.Module], train: Split, val: Split, spec: TrainSpec, seeds: list[int], *,
              target: str = "classification", device: str = "cpu",
              precision: str = "fp32") -> tuple[list[tuple[nn.Module, T.FitInfo]], str]:
    """Every seed's (model at its best epoch, FitInfo) as ``fit`` gives it, and how they were trained: "together", or
    "one by one: why". A vectorised run that fails (an operation vmap cannot batch) falls back to one by one."""
    torch.manual_seed(seeds[0])
    why = why_one_by_one(make_model(), seeds, train, precision)
    if not why:
        try:
            return _together(make_model, train, val, spec, seeds, target, device), "together"
        except T.NonFiniteLoss:
            raise
        except Exception as exc:  # noqa: BLE001 — any failure to vectorise: train them the ordinary way
            why = f"vmap failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
    return [T.fit(make_model, train, val, spec, seed=s, target=target, device=device, precision=precision)
            for s in seeds], f"one by one: {why}"


def _together(make_model, train: Split, val: Split, spec: TrainSpec, seeds: list[int], target: str,
              device: str) -> list[tuple[nn.Module, T.FitInfo]]:
    models = []
    for s in seeds:  # each seed's initialisation, drawn as fit draws it
        torch.manual_seed(s)
        models.append(make_model().to(device))
    loss_fn = T.loss_function(target, spec.loss)
    (xtr, ytr), (xva, yva) = T.tensors(train, device), T.tensors(val, device)
    if target == "regression":
        ytr, yva = ytr.float(), yva.float()
    initial = [T._mean_loss(m, xtr, ytr, None, loss_fn, spec.batch_size, "fp32", device) for m in models]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    # fit's optimizer over the stacked parameters
    opt = T.training_step(models[0], spec, target).optimizer(params.values())

    def forward(p, b, xs):
        return functional_call(base, (p, b), (xs,))

    batched = vmap(forward, in_dims=(0, 0, 0))
    shared = vmap(forward, in_dims=(0, 0, None))
    per_seed_loss = vmap(loss_fn)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    k, n = len(seeds), len(ytr)
    sizes = torch.tensor([min(spec.batch_size, n - i) for i in range(0, n, spec.batch_size)], dtype=torch.float64,
                         device=device)
    best = [(-math.inf, 0) for _ in seeds]
    kept = {name: p.detach().clone() for name, p in params.items()}
    kept_out: list[torch.Tensor | None] = [None] * k
    stopped: list[int | None] = [None] * k  # the epoch each seed stopped at (patience), None while it runs
    times, epoch_losses = [], [[] for _ in seeds]
    base.train()
    epoch = 0
    for epoch in range(1, spec.epochs + 1):
        t0 = time.perf_counter()
        orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        losses = []
        for i in range(0, n, spec.batch_size):
            idx = orders[:, i:i + spec.batch_size]  # (seeds, batch): each seed's own rows
            opt.zero_grad(set_to_none=True)
            loss = per_seed_loss(batched(params, buffers, [x[idx] for x in xtr]), ytr[idx])  # (seeds,)
            loss.sum().backward()  # each seed's parameters get its own loss's gradient
            opt.step()
            losses.append(loss.detach())
        per_step = torch.stack(losses).double()  # (steps, seeds)
        with torch.no_grad():
            base.eval()
            out = shared(params, buffers, xva).float()  # (seeds, rows, outputs)
            base.train()
        bad = ~torch.isfinite(per_step)
        scores = ((out.argmax(2) == yva).float().mean(1) if target == "classification"
                  else -per_seed_loss(out, yva.expand(k, -1))).tolist()
        times.append(time.perf_counter() - t0)
        mean_loss = ((per_step * sizes[:, None]).sum(0) / n).tolist()
        for j in range(k):
            if stopped[j] is not None:
                continue
            if bad[:, j].any():
                raise T.NonFiniteLoss(f"seed {seeds[j]}: loss became {per_step[bad[:, j].nonzero()[0, 0], j].item()} "
                                      f"at epoch {epoch}")
            if target != "classification" and not math.isfinite(scores[j]):
                raise T.NonFiniteLoss(f"seed {seeds[j]}: validation loss became {-scores[j]} at epoch {epoch}")
            epoch_losses[j].append(mean_loss[j])
            if scores[j] > best[j][0]:
                best[j] = (scores[j], epoch)
                kept_out[j] = out[j]
                for name, p in params.items():
                    kept[name][j].copy_(p[j])
            elif spec.patience is not None and epoch - best[j][1] >= spec.patience:
                stopped[j] = epoch
        if all(s is not None for s in stopped):
            break
    # Each epoch's joint time shared among the seeds that ran it: the seeds' times add up to the wall time.
    ran = [[e for e in range(1, epoch + 1) if stopped[j] is None or e <= stopped[j]] for j in range(k)]
    share = {e: times[e - 1] / sum(e in r for r in ran) for e in range(1, epoch + 1)}
    results = []
    chance, chance_se = T.chance_score(ytr, yva, target, spec.loss)
    train_chance = T.constant_losses(ytr, ytr, target, spec.loss, kept_out[0].shape[-1]).mean().item()
    for j, model in enumerate(models):
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(kept[name][j])
        model.eval()
        own = [share[e] for e in ran[j]]
        trained = T._mean_loss(model, xtr, ytr, None, loss_fn, spec.batch_size, "fp32", device)
        val_loss, val_chance_loss, gain_se = T.loss_against_chance(kept_out[j], ytr, yva, target, spec.loss)
        results.append((model, T.FitInfo(
            best[j][1], len(own), best[j][0], sum(own), own, initial_loss=initial[j], epoch_losses=epoch_losses[j],
            val_chance=chance, val_chance_se=chance_se, trained_loss=trained, train_chance_loss=train_chance,
            val_loss=val_loss, val_chance_loss=val_chance_loss, val_loss_gain_se=gain_se, val_rows=len(yva),
            optimizer_impl=T.optimizer_impl(opt))))
    return results

