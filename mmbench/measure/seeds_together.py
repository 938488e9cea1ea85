"""Seeds trained together: the seeds of one configuration as one model, each seed with its own initialisation, its
own batch order, its own optimizer state and its own best epoch, exactly as ``fit`` draws them one by one. One step
then updates every seed: on a small model the per-step overheads (dispatch, the optimizer, Python) are paid once for
all seeds instead of once per seed.

Two ways to join them: seed_batched.py (parameters stacked seed first, each Linear one batched matmul: the fast way,
for the methods it knows) and, where asked (``seeds_together: true``), ``torch.func.stack_module_state`` + ``vmap``
for other models (any built-in method without state or randomness; on one CPU thread its per-operation overhead
makes it slower than one by one). The loss is the sum of the seeds' mean losses, so each seed's parameters get their
own loss's gradient; Adam, AdamW and SGD (weight decay included) update every element on its own, so one optimizer
over the stacked parameters is each seed's own optimizer. Where a model cannot be joined so that each seed gets what
it would alone, the seeds train one by one with ``fit`` and the row's ``seeds_trained`` says why.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable, NamedTuple

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from mmbench.data.registry import Split
from mmbench.measure import seed_batched
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
              target: str = "classification", device: str = "cpu", precision: str = "fp32",
              vmap_too: bool = True, fit_alone: bool = True,
              on_epoch: Callable[[int, float], None] | None = None) -> tuple[list[tuple[nn.Module, T.FitInfo] | None],
                                                                           str]:
    """Every seed's (model at its best epoch, FitInfo) as ``fit`` gives it, and how they were trained: "together
    (batched)" (seed_batched.py: stacked parameters, no vmap), "together (vmap)" where the model is not seed-batched
    but vmap can run it (only with ``vmap_too``: on one CPU thread it is slower than one by one), or "one by one:
    why". A vectorised run that fails falls back to the next way. One by one, each seed is fitted here, or with
    ``fit_alone=False`` left to the caller (None in its place: one model alive at a time).

    ``on_epoch(epoch, score)``: the first seed's validation curve, as ``fit`` reports it (tuning's pruner; it may
    raise to stop them all). The outcome is then the sequential one's: the first seed is reported and may be stopped
    before any other seed's divergence counts, and of several seeds that diverge the first in ``seeds`` is named."""
    if len(seeds) < 2:
        return (_alone(make_model, train, val, spec, seeds, target, device, precision, fit_alone, on_epoch),
                "one by one: one seed")
    torch.manual_seed(seeds[0])
    model = make_model()
    why = why_one_by_one(model, seeds, train, precision)
    if not why:
        why = seed_batched.why_not(model)
        if not why:
            try:
                return (_together(make_model, train, val, spec, seeds, target, device, _batched, on_epoch),
                        "together (batched)")
            except T.NonFiniteLoss:
                raise
            except _Stopped as stop:  # on_epoch stopped them: its own exception, not a failure to vectorise
                raise stop.reason from None
            except Exception as exc:  # noqa: BLE001 — a failure to batch: the next way
                why = f"seed-batched run failed ({_said(exc)})"
        if vmap_too:
            try:
                return (_together(make_model, train, val, spec, seeds, target, device, _vmapped, on_epoch),
                        "together (vmap)")
            except T.NonFiniteLoss:
                raise
            except _Stopped as stop:  # on_epoch stopped them: its own exception, not a failure to vectorise
                raise stop.reason from None
            except Exception as exc:  # noqa: BLE001 — any failure to vectorise: train them the ordinary way
                why = f"vmap failed ({_said(exc)})"
    return (_alone(make_model, train, val, spec, seeds, target, device, precision, fit_alone, on_epoch),
            f"one by one: {why}")


class _Stopped(Exception):
    """Whatever on_epoch raised to stop the fits (``reason``), carried past the fallbacks to the caller."""

    def __init__(self, reason: BaseException):
        super().__init__(reason)
        self.reason = reason


def _alone(make_model, train, val, spec, seeds, target, device, precision, fit_alone, on_epoch=None):
    if not fit_alone:
        return [None] * len(seeds)
    return [T.fit(make_model, train, val, spec, seed=s, target=target, device=device, precision=precision,
                  on_epoch=on_epoch if i == 0 else None) for i, s in enumerate(seeds)]


def _said(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"


class _Joint(NamedTuple):
    """The seeds as one model: its stacked parameters (name -> (S, *shape), the models' names), the forward on each
    seed's own rows (xs (S, B, d)) and on rows all seeds share (xs (N, d)), giving (S, rows, outputs), each seed's
    mean loss (S,) and the switch between training and evaluation mode."""
    params: dict[str, torch.Tensor]
    own_rows: Callable[[list[torch.Tensor]], torch.Tensor]
    shared_rows: Callable[[list[torch.Tensor]], torch.Tensor]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    mode: Callable[[bool], object]


def _batched(models: list[nn.Module], target: str, loss: str) -> _Joint:
    joint = seed_batched.SeedBatched(models)
    k = len(models)
    return _Joint(dict(joint.model.named_parameters()), joint, lambda xs: joint([x.expand(k, *x.shape) for x in xs]),
                  seed_batched.per_seed_loss(target, loss), joint.train)


def _vmapped(models: list[nn.Module], target: str, loss: str) -> _Joint:
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def forward(p, b, xs):
        return functional_call(base, (p, b), (xs,))

    batched, shared = vmap(forward, in_dims=(0, 0, 0)), vmap(forward, in_dims=(0, 0, None))
    return _Joint(params, lambda xs: batched(params, buffers, xs), lambda xs: shared(params, buffers, xs),
                  vmap(T.loss_function(target, loss)), base.train)


@torch.no_grad()
def _mean_losses(joint: _Joint, xs: list[torch.Tensor], y: torch.Tensor, batch_size: int) -> list[float]:
    """Each seed's task loss over the whole split in eval mode, batched as train._mean_loss batches it."""
    joint.mode(False)
    total = 0
    for i in range(0, len(y), batch_size):
        out = joint.shared_rows([x[i:i + batch_size] for x in xs])
        total = total + joint.loss(out, y[i:i + batch_size].expand(out.shape[0], -1)).double() * len(out[0])
    return (total / len(y)).tolist()


def _together(make_model, train: Split, val: Split, spec: TrainSpec, seeds: list[int], target: str, device: str,
              joined: Callable[[list[nn.Module], str, str], _Joint],
              on_epoch: Callable[[int, float], None] | None = None) -> list[tuple[nn.Module, T.FitInfo]]:
    models = []
    for s in seeds:  # each seed's initialisation, drawn as fit draws it
        torch.manual_seed(s)
        models.append(make_model().to(device))
    (xtr, ytr), (xva, yva) = T.tensors(train, device), T.tensors(val, device)
    if target == "regression":
        ytr, yva = ytr.float(), yva.float()
    joint = joined(models, target, spec.loss)
    params = joint.params
    initial = _mean_losses(joint, xtr, ytr, spec.batch_size)
    # fit's optimizer over the stacked parameters: Adam, AdamW and SGD are elementwise, so each seed's own
    opt = T.training_step(models[0], spec, target).optimizer(params.values())
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    k, n = len(seeds), len(ytr)
    sizes = torch.tensor([min(spec.batch_size, n - i) for i in range(0, n, spec.batch_size)], dtype=torch.float64,
                         device=device)
    best = [(-math.inf, 0) for _ in seeds]
    kept = {name: p.detach().clone() for name, p in params.items()}
    kept_out: list[torch.Tensor | None] = [None] * k
    stopped: list[int | None] = [None] * k  # the epoch each seed stopped at (patience), None while it runs
    failed: dict[int, T.NonFiniteLoss] = {}  # seeds that diverged while the first seed's curve was reported
    times, epoch_losses = [], [[] for _ in seeds]
    epoch = 0
    for epoch in range(1, spec.epochs + 1):
        t0 = time.perf_counter()
        joint.mode(True)
        orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        losses = []
        for i in range(0, n, spec.batch_size):
            idx = orders[:, i:i + spec.batch_size]  # (seeds, batch): each seed's own rows
            rows = idx.flatten()  # gathered as one list of rows (indexing with the 2-d idx is ~10× slower on CPU)
            opt.zero_grad(set_to_none=True)
            out = joint.own_rows([x.index_select(0, rows).view(idx.shape + x.shape[1:]) for x in xtr])
            loss = joint.loss(out, ytr.index_select(0, rows).view(idx.shape))  # (seeds,)
            loss.sum().backward()  # each seed's parameters get its own loss's gradient
            opt.step()
            losses.append(loss.detach())
        per_step = torch.stack(losses).double()  # (steps, seeds)
        with torch.no_grad():
            joint.mode(False)
            out = torch.cat([joint.shared_rows([x[i:i + 4096] for x in xva]) for i in range(0, len(yva), 4096)],
                            1).float()  # (seeds, rows, outputs), in fit's validation batches
        bad = ~torch.isfinite(per_step)
        scores = ((out.argmax(2) == yva).float().mean(1) if target == "classification"
                  else -joint.loss(out, yva.expand(k, -1))).tolist()
        times.append(time.perf_counter() - t0)
        mean_loss = ((per_step * sizes[:, None]).sum(0) / n).tolist()
        for j in range(k):
            if stopped[j] is not None:
                continue
            diverged = None
            if bad[:, j].any():
                diverged = T.NonFiniteLoss(f"seed {seeds[j]}: loss became "
                                           f"{per_step[bad[:, j].nonzero()[0, 0], j].item()} at epoch {epoch}")
            elif target != "classification" and not math.isfinite(scores[j]):
                diverged = T.NonFiniteLoss(f"seed {seeds[j]}: validation loss became {-scores[j]} at epoch {epoch}")
            if diverged is not None:
                if on_epoch is None or j == 0:
                    raise diverged
                # with a curve reported, a later seed's divergence counts only if the first seed runs to its end
                # (one by one, it would have been trained after it): the seed stops, the error waits
                failed.setdefault(j, diverged)
                stopped[j] = epoch
                continue
            if j == 0 and on_epoch is not None:
                try:
                    on_epoch(epoch, scores[0])
                except Exception as exc:  # noqa: BLE001 — a pruner's stop, handed back to the caller as raised
                    raise _Stopped(exc) from exc
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
    if failed:
        raise failed[min(failed)]  # the first seed in order that diverged, as one by one
    with torch.no_grad():  # every seed's kept weights, into the joint model and each seed's own
        for name, p in params.items():
            p.copy_(kept[name])
        for j, model in enumerate(models):
            for name, p in model.named_parameters():
                p.copy_(kept[name][j])
    trained = _mean_losses(joint, xtr, ytr, spec.batch_size)
    # Each epoch's joint time shared among the seeds that ran it: the seeds' times add up to the wall time.
    ran = [[e for e in range(1, epoch + 1) if stopped[j] is None or e <= stopped[j]] for j in range(k)]
    share = {e: times[e - 1] / sum(e in r for r in ran) for e in range(1, epoch + 1)}
    results = []
    chance, chance_se = T.chance_score(ytr, yva, target, spec.loss)
    train_chance = T.constant_losses(ytr, ytr, target, spec.loss, kept_out[0].shape[-1]).mean().item()
    for j, model in enumerate(models):
        model.eval()
        own = [share[e] for e in ran[j]]
        val_loss, val_chance_loss, gain_se = T.loss_against_chance(kept_out[j], ytr, yva, target, spec.loss)
        results.append((model, T.FitInfo(
            best[j][1], len(own), best[j][0], sum(own), own, initial_loss=initial[j], epoch_losses=epoch_losses[j],
            val_chance=chance, val_chance_se=chance_se, trained_loss=trained[j], train_chance_loss=train_chance,
            val_loss=val_loss, val_chance_loss=val_chance_loss, val_loss_gain_se=gain_se, val_rows=len(yva),
            optimizer_impl=T.optimizer_impl(opt))))
    return results
