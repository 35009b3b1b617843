"""Shortcut models (Frans et al. 2024): one network for jumps of every dyadic size d.

Notation (official code kvfrans/shortcut-models; fast-samplers notes §3), in the path time
s of `flowmap.py` (s = 1 noise, s = 0 data):

    M = 2^levels    the finest grid; d ∈ {1, 1/2, ..., 1/M} the trained jump sizes
    d = 0           the flow itself (an instantaneous prediction)
    f(x_s, s, d)    the network's x̂0 for the jump s → s − d (read through flowmap.jump)
    θ⁻              the target network: the trainer's EMA weights, under no_grad

Each batch is split: a share (`shortcut.bootstrap_share`) learns self-consistency, the rest
flow matching.

    flow matching     s = j/M, j ~ U{1..M} (every time a K-step sampler can visit); d = 0.
                      With the x0-adapter the flow-matching regression is the x̂0 regression
                      of diffusion, so it is the cross-entropy −log p̂(w | x_s) of the
                      network's word logits, as in the default diffusion recipe.       "ce"
    self-consistency  k ~ U{0..levels}, d = 2^-k, s = j·d with j ~ U{1..2^k}. Two half
                      jumps of θ⁻ (their jump input is d/2, or 0 at the finest level):
                         x̂0_a = f⁻(x_s, s, ·),          x_m = jump(x_s, x̂0_a, s → s − d/2)
                         x̂0_b = f⁻(x_m, s − d/2, ·),    x_e = jump(x_m, x̂0_b, s − d/2 → s − d)
                      The x̂0 whose single jump of size d lands on x_e as well is
                         x̂0* = (s·x_e − (s − d)·x_s)/d,
                      and the network learns it: mean ‖f(x_s, s, d) − x̂0*‖².       "shortcut"

This is the official target s(x, t, 2d) = (s(x, t, d) + s(x', t + d, d))/2 with velocities
read through the adapter (u = (x_s − x̂0)/s), measured on x̂0 instead of on the velocity:
the velocity error is the x̂0 error divided by s, which would weigh the clean end of the
path up to M² times more than the noisy end. Where the official code trains the finest
level by flow matching at d = 1/M, here d = 0 is the flow (the paper's formulation) and the
finest jump bootstraps from two Euler half steps of it.

The data are the embeddings themselves, x0 = EMB(w), without Diffusion-LM's jitter
q(x0 | w): the endpoint of a jump is then a word embedding, which x̂0 = softmax(logits)·EMB
can represent exactly, where a jittered x0 lies off the embeddings.

Target network: the official code builds targets with EMA weights; the trainer passes its
EMA copy as `target` (held-out evaluation passes the evaluated weights themselves).
"""

from __future__ import annotations

import torch

from difflm.config import Config
from difflm.diffusion.flowmap import FlowPath, jump
from difflm.diffusion.paths import per_example
from difflm.model.denoiser import Denoiser
from difflm.objectives.base import Batch, Draws, Frozen, LossOutput, objective, word_nll


def bootstrap_target(
    target: Denoiser, path: FlowPath, x: torch.Tensor, s: torch.Tensor, d: torch.Tensor, half_input: torch.Tensor
) -> torch.Tensor:
    """x̂0* for the jump s → s − d from two half jumps of the target network.

    Args:
        target: θ⁻.
        path: the RF path.
        x: x_s, [B, L, d].
        s: path times [B]; d: jump sizes [B], 0 < d ≤ s.
        half_input: the jump input of each half jump, [B] (d/2, or 0 for the flow).
    """
    h = d / 2
    x0_a = path.predict(target, x, s, half_input).x0
    x_m = jump(x, x0_a, s, s - h)
    x0_b = path.predict(target, x_m, s - h, half_input).x0
    x_e = jump(x_m, x0_b, s - h, s - d)
    return (per_example(s, x) * x_e - per_example(s - d, x) * x) / per_example(d, x)


@objective
def shortcut_loss(denoiser: Denoiser, batch: Batch, config: Config, draws: Draws, frozen: Frozen) -> LossOutput:
    """The shortcut objective on a batch of padded sentences.

    Args:
        denoiser: the network being trained (`model.generator=shortcut`).
        batch: word ids [B, L] (unconditioned).
        config: the run config (`shortcut` section, `diffusion.rounding_weight`).
        draws: source of ε, times and jump sizes.
        frozen: `target`, θ⁻ for the self-consistency targets (default: the denoiser itself).
    """
    ids = batch.ids
    levels, M = config.shortcut.levels, 2**config.shortcut.levels
    path = FlowPath.of(denoiser.schedule)
    B = ids.shape[0]

    # 1. Data and noise.
    x0 = denoiser.embedding(ids)
    eps = draws.randn(tuple(x0.shape))

    # 2. Times and jumps: the first rows bootstrap, the others are flow matching.
    k = draws.randint(0, levels + 1, B)
    d_boot = 0.5 ** k.float()
    s_boot = ((draws.rand(B) * 2.0**k).floor() + 1) * d_boot  # j·d, j ~ U{1..2^k}
    s_flow = draws.randint(1, M + 1, B).float() / M
    boot = torch.arange(B, device=ids.device) < round(B * config.shortcut.bootstrap_share)
    s = torch.where(boot, s_boot, s_flow)
    d = torch.where(boot, d_boot, torch.zeros_like(d_boot))
    x_s = path.point(x0, eps, s)

    pred = path.predict(denoiser, x_s, s, d)
    terms: dict[str, torch.Tensor] = {}
    total = x0.new_zeros(())

    # 3. Flow matching through the x0-adapter: the words' cross-entropy.
    flow = ~boot
    if flow.any():
        terms["ce"] = word_nll(pred.logits[flow], ids[flow])
        total = total + terms["ce"] * flow.sum() / B

    # 4. Self-consistency: one jump of size d should land where two of size d/2 do.
    if boot.any():
        half_input = torch.where(k < levels, d_boot / 2, torch.zeros_like(d_boot))[boot]
        theta_minus = frozen.target if frozen.target is not None else denoiser
        with torch.no_grad():
            x0_star = bootstrap_target(theta_minus, path, x_s[boot], s[boot], d[boot], half_input)
        terms["shortcut"] = ((pred.x0[boot] - x0_star) ** 2).mean()
        total = total + terms["shortcut"] * boot.sum() / B

    # 5. Rounding: −log p(w | x0) keeps the embeddings apart.
    terms["rounding"] = word_nll(denoiser.embedding.logits(x0), ids)
    return LossOutput.of(total + config.diffusion.rounding_weight * terms["rounding"], terms)
