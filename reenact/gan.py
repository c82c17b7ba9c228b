"""One GAN update for every trainer of the project: loss terms in, named scalars out.

Stage 1 (``meta_learning.trainer``), stage 2 (``finetune.personalize``) and any other adversarial trainer make
their G step and their D step with :func:`update`, as imaginaire's trainers share ``gen_update`` /
``dis_update``. A trainer keeps what is its own: the forward passes, which network is frozen for which step
(``requires_grad_``), the loss terms and their weights, schedules, EMA, checkpoints. :func:`update` does the
part that must be the same everywhere, in this order:

1. ``total = sum(weights.get(name, 1) * term)`` over ``terms`` (in their order; a term without a weight is
   added as it is, so pre-weighted terms need no weights at all);
2. one host sync for all scalars (``terms``, ``total``, ``logged``), averaged by ``reduce`` when given (e.g. the
   mean over DDP ranks), and :class:`reenact.errors.NonFiniteLossError` when any is NaN/inf, raised *before*
   the update, so the networks and optimisers keep their last finite state;
3. ``zero_grad(set_to_none=True)``, backward (through ``scaler`` for fp16 AMP), gradient-norm clipping at
   ``grad_clip`` (unscaled first), the optimiser step (and ``scaler.update()``).

It returns ``{name: float}`` of the terms as given, ``total_name`` and the ``logged`` extras. Example, a G step
then a D step of a projection-discriminator GAN::

    D.requires_grad_(False)
    fake = G(lmk, e).image
    scores, feats = D(torch.cat([real, fake]), ...)
    logs = update(opt_g, {"adv": g_hinge(scores[B:])["adv"], "l1": (fake - real).abs().mean()},
                  weights={"adv": 1.0, "l1": 10.0}, total_name="g_total", where=f"step {i} (generator update)")
    D.requires_grad_(True)
    scores, _ = D(torch.cat([real, fake.detach()]), ...)
    logs |= update(opt_d, d_hinge(scores[:B], scores[B:]), total_name="d_total", grad_clip=1.0,
                   where=f"step {i} (discriminator update)")
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

import torch

from reenact.errors import NonFiniteLossError


def update(optimizer: torch.optim.Optimizer, terms: Mapping[str, torch.Tensor], *,
           weights: Mapping[str, float] | None = None, total_name: str = "total",
           logged: Mapping[str, torch.Tensor] | None = None, grad_clip: float = 0.0,
           params: Iterable[torch.Tensor] | None = None, scaler: "torch.amp.GradScaler | None" = None,
           reduce: Callable[[torch.Tensor], torch.Tensor] | None = None, where: str = "update",
           hint: str | Callable[[], str] = "") -> dict[str, float]:
    """One optimiser step on the weighted sum of ``terms`` (scalar tensors with gradients); see the module
    docstring. ``params``: what ``grad_clip`` clips (default: every parameter of ``optimizer``). ``where`` starts
    the NonFiniteLossError message (e.g. ``"step 3 (generator update)"``), ``hint`` ends it (a callable is only
    called on failure, for advice that costs a file read)."""
    weights = weights or {}
    total = sum(weights[k] * v if k in weights else v for k, v in terms.items())
    scalars = {**terms, total_name: total, **(logged or {})}
    names = list(scalars)
    vals = torch.stack([scalars[k].detach().float().reshape(()) for k in names])
    if reduce is not None:
        vals = reduce(vals)
    out = dict(zip(names, vals.cpu().tolist()))
    bad = [k for k, v in out.items() if not math.isfinite(v)]
    if bad:
        advice = hint() if callable(hint) else hint
        raise NonFiniteLossError(f"{where}: non-finite loss " + ", ".join(f"{k}={out[k]}" for k in bad)
                                 + (f"; {advice}" if advice else ""))
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(total) if scaler is not None else total).backward()
    if grad_clip > 0:
        if scaler is not None:
            scaler.unscale_(optimizer)
        clip = list(params) if params is not None else [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(clip, grad_clip, foreach=True)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return out
