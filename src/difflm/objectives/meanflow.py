"""MeanFlow (Geng et al. 2025): the average velocity over [r, s], learned from its identity.

Notation (official code Gsunshine/meanflow; fast-samplers notes §4), in the path time s of
`flowmap.py` (s = 1 noise, s = 0 data):

    r ≤ s            the ends of a jump; the network's jump input is s − r
    u(x_s, r, s)     the average velocity 1/(s − r)·∫_r^s v dτ, read from the network's
                     x̂0 by the x0-adapter u = (x_s − x̂0)/s
    v                the conditional velocity τ_max·(ε − x0) (flowmap.FlowPath.velocity)
    du/ds            the total derivative along the path, v·∂_x u + ∂_s u (r fixed),
                     a Jacobian-vector product with tangents (v, 1, 0)
    sg(·)            stop-gradient

The MeanFlow identity u = v − (s − r)·du/ds gives the regression target

    u_tgt = sg(v − (s − r)·du/ds),   Δ = ‖u − u_tgt‖² per sentence,
    loss  = mean Δ/sg(Δ + c)^p                  (adaptive weighting, c = weight_eps)   "meanflow"

(the logged "meanflow" is the plain mean squared error per element, the weighted loss sits
in "loss"). Times: s and r are the max and min of two logit-normal draws; rows beyond
`meanflow.jump_share` have r = s, where u is the instantaneous velocity and the regression
is flow matching, which the x0-adapter turns into the words' cross-entropy as in the
diffusion objective ("ce"). A rounding term keeps the embeddings apart.

The data are the embeddings themselves, x0 = EMB(w), without Diffusion-LM's jitter (why: `shortcut.py`).

Forward-mode AD: `torch.func.jvp` runs in fp32 (autocast off), with the math attention
kernel and without `nn.TransformerEncoder`'s fused fast path, neither of which has
forward-AD formulas (pytorch#128971). The JVP is taken through the bare network the loss
is given; under DDP the trainer wraps the whole objective, so the JVP never sees the DDP
wrapper, and the gradients of u flow back through ordinary autograd into DDP's hooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from difflm.config import Config
from difflm.diffusion.flowmap import FlowPath, average_velocity
from difflm.diffusion.paths import per_example
from difflm.model.denoiser import Denoiser
from difflm.objectives.base import Batch, Draws, Frozen, LossOutput, objective, word_nll


@contextmanager
def forward_ad_ready(device_type: str) -> Iterator[None]:
    """What `torch.func.jvp` needs of the transformer: fp32, math attention, no fused fast path."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.autocast(device_type, enabled=False), sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def average_velocity_and_derivative(
    denoiser: Denoiser, path: FlowPath, x: torch.Tensor, r: torch.Tensor, s: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(u(x_s, r, s), du/ds along the velocity v), both [B, L, d]; u keeps its autograd graph.

    Args:
        denoiser: the network (not a DDP wrapper).
        path: the RF path.
        x: x_s, [B, L, d]; r, s: [B] with 0 ≤ r ≤ s; v: dx/ds, [B, L, d].
    """

    def u_of(x: torch.Tensor, s: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return average_velocity(x, path.predict(denoiser, x, s, s - r).x0, s)

    with forward_ad_ready(x.device.type):
        # Without has_aux, jvp returns the pair (output, its JVP); its annotation also allows an aux's triple.
        result = torch.func.jvp(u_of, (x, s, r), (v, torch.ones_like(s), torch.zeros_like(r)))
        return cast("tuple[torch.Tensor, torch.Tensor]", result)


def meanflow_target(dudt: torch.Tensor, v: torch.Tensor, r: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """u_tgt = sg(v − (s − r)·du/ds)."""
    return (v - per_example(s - r, v) * dudt).detach()


@objective
def meanflow_loss(denoiser: Denoiser, batch: Batch, config: Config, draws: Draws, frozen: Frozen) -> LossOutput:
    """The MeanFlow objective on a batch of padded sentences.

    Args:
        denoiser: the network being trained (`model.generator=meanflow`).
        batch: word ids [B, L] (unconditioned).
        config: the run config (`meanflow` section, `diffusion.rounding_weight`).
        draws: source of ε and the times.
        frozen: unused (the target is the network's own, stop-gradient).
    """
    ids = batch.ids
    mf = config.meanflow
    path = FlowPath.of(denoiser.schedule)
    B = ids.shape[0]

    # 1. Data, noise, velocity.
    x0 = denoiser.embedding(ids)
    eps = draws.randn(tuple(x0.shape))
    v = path.velocity(x0, eps)

    # 2. Times: s ≥ r from two logit-normal draws; the first rows jump, the others have r = s.
    a, b = (torch.sigmoid(draws.randn((B,)) * mf.time_std + mf.time_mean) for _ in range(2))
    s, r = torch.maximum(a, b), torch.minimum(a, b)
    jumping = torch.arange(B, device=ids.device) < round(B * mf.jump_share)
    x_s = path.point(x0, eps, s)
    terms: dict[str, torch.Tensor] = {}
    total = x0.new_zeros(())

    # 3. r = s: flow matching, through the x0-adapter the words' cross-entropy.
    flow = ~jumping
    if flow.any():
        pred = path.predict(denoiser, x_s[flow], s[flow], torch.zeros_like(s[flow]))
        terms["ce"] = word_nll(pred.logits, ids[flow])
        total = total + terms["ce"] * flow.sum() / B

    # 4. r < s: regress u onto the MeanFlow identity's target, adaptively weighted.
    if jumping.any():
        xj, rj, sj, vj = x_s[jumping], r[jumping], s[jumping], v[jumping]
        u, dudt = average_velocity_and_derivative(denoiser, path, xj, rj, sj, vj)
        error = ((u - meanflow_target(dudt, vj, rj, sj)) ** 2).flatten(1).sum(1)  # Δ, [B_jump]
        weighted = (error / (error.detach() + mf.weight_eps) ** mf.power).mean()
        terms["meanflow"] = error.detach().mean() / u[0].numel()
        total = total + weighted * jumping.sum() / B

    # 5. Rounding: −log p(w | x0) keeps the embeddings apart.
    terms["rounding"] = word_nll(denoiser.embedding.logits(x0), ids)
    return LossOutput.of(total + config.diffusion.rounding_weight * terms["rounding"], terms)
