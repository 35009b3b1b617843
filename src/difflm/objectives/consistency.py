"""Consistency models (Song et al. 2023; iCT, Song & Dhariwal 2023) on the schedule's noise range.

Notation (official code openai/consistency_models; fast-samplers notes §2), in EDM form
x = x0 + σ·ε, which `paths.denoise_edm` feeds to the network as the VP point of equal SNR:

    σ_min, σ_max      σ of the schedule's least (t = 1/T) and most (t = 1) noisy trained level
    σ_0 < … < σ_{N−1} the Karras grid, σ_i = (σ_min^{1/ρ} + i/(N−1)·(σ_max^{1/ρ} − σ_min^{1/ρ}))^ρ, ρ = 7
    D(x, σ)           the network's x̂0
    c_skip, c_out     σ_min/σ and 1 − σ_min/σ
    f(x, σ)           c_skip·x + c_out·D(x, σ)                   f(x, σ_min) = x (boundary condition)
    θ⁻                the target parameters: sg(θ) (iCT), run with the same dropout masks

Why not the official c_skip = σ_d²/((σ − σ_min)² + σ_d²), c_out = σ_d(σ − σ_min)/√(σ² + σ_d²):
they suit a free network output F, which near σ_min must predict (minus) the noise. Our
network's x̂0 = softmax(logits)·EMB lies in the hull of the embeddings. For one data point
μ the consistency function is f(x, σ) = μ + (σ_min/σ)·(x − μ), which the official c_skip ≈ 1
near σ_min could only reach with D far outside that hull; with c_skip = σ_min/σ it is exactly
D = μ. This f is the deterministic DDIM jump from σ to σ_min with x̂0 = D (the
parameterization of Consistency Trajectory Models, Kim et al. 2023), so a distilled student
starts as one-step DDIM of its teacher.

Training pairs, n ~ U{0..N−2}, z ~ N(0, I), x0 = EMB(w):

    x_{n+1} = x0 + σ_{n+1}·z
    CD (distillation, a teacher run):  x̂_n = one Heun step of the teacher's probability-flow
        ODE dx/dσ = (x − D_T(x, σ))/σ from σ_{n+1} to σ_n
    CT (training from scratch):        x̂_n = x0 + σ_n·z
    L = λ_n·h(f_θ(x_{n+1}, σ_{n+1}) − sg f_θ⁻(x̂_n, σ_n)),   λ_n = 1/(σ_{n+1} − σ_n),
        h(δ) = √(‖δ‖² + c²) − c over the whole sentence, c = 0.00054·√(L·d)   (iCT)   "consistency"
      + denoise_weight·(−log p̂(w | x_{n+1})): the network's own word logits at the noisier
        point, a denoising regulariser (CTM adds one) that keeps D an x̂0 predictor   "ce"
      + rounding: −log p(w | x0) keeps the embeddings apart                           "rounding"

The data are the embeddings themselves, x0 = EMB(w), without Diffusion-LM's jitter (why: `shortcut.py`).

The noise-level curriculum of CT/iCT (N growing with training) is left out: runs here are
short, and N is the fixed `consistency.num_scales`.
"""

from __future__ import annotations

import torch

from difflm.config import Config
from difflm.diffusion.consistency import combine, karras_sigmas, sigma_range
from difflm.diffusion.paths import denoise_edm, per_example
from difflm.model.denoiser import Denoiser, Prediction
from difflm.objectives.base import Batch, Draws, Frozen, LossOutput, objective, word_nll


def consistency_function(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, Prediction]:
    """(f(x, σ), the network's prediction D at x), for EDM points x [B, L, d] at σ [B]."""
    pred = denoise_edm(denoiser, x, sigma)
    return combine(x, pred.x0, sigma, sigma_range(denoiser.schedule)[0]), pred


def heun_step(teacher: Denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One Heun step of dx/dσ = (x − D_T(x, σ))/σ from σ to σ_next (both [B], > 0)."""
    dsigma = per_example(sigma_next - sigma, x)
    slope = (x - denoise_edm(teacher, x, sigma).x0) / per_example(sigma, x)
    euler = x + dsigma * slope
    slope_next = (euler - denoise_edm(teacher, euler, sigma_next).x0) / per_example(sigma_next, x)
    return x + dsigma * (slope + slope_next) / 2


def pseudo_huber(delta: torch.Tensor) -> torch.Tensor:
    """h(δ) = √(‖δ‖² + c²) − c over each whole sentence, c = 0.00054·√(L·d): [B]."""
    c = 0.00054 * delta[0].numel() ** 0.5
    return (delta.flatten(1).pow(2).sum(1) + c**2).sqrt() - c


@objective
def consistency_loss(denoiser: Denoiser, batch: Batch, config: Config, draws: Draws, frozen: Frozen) -> LossOutput:
    """Consistency distillation (with a teacher) or consistency training (without).

    Args:
        denoiser: the network being trained (`model.generator=consistency`).
        batch: word ids [B, L] (unconditioned).
        config: the run config (`consistency` section, `diffusion.rounding_weight`).
        draws: source of z and the grid indices.
        frozen: `teacher`, the frozen diffusion model to distil; None trains from scratch
            (θ⁻ = sg(θ), iCT: `target` is unused).
    """
    ids = batch.ids
    cm = config.consistency
    sigmas = karras_sigmas(denoiser.schedule, cm.num_scales).to(device=ids.device, dtype=torch.float32)
    B = ids.shape[0]

    # 1. Data, noise, a pair of adjacent levels.
    x0 = denoiser.embedding(ids)
    z = draws.randn(tuple(x0.shape))
    n = draws.randint(0, cm.num_scales - 1, B)
    sigma, sigma_next = sigmas[n], sigmas[n + 1]
    x_next = x0 + per_example(sigma_next, x0) * z

    # 2. The earlier point: the teacher's ODE step (CD) or the same noise at σ_n (CT).
    with torch.no_grad():
        x_prev = (
            heun_step(frozen.teacher, x_next, sigma_next, sigma)
            if frozen.teacher is not None
            else x0 + per_example(sigma, x0) * z
        )

    # 3. The target f_θ⁻(x̂_n, σ_n) with θ⁻ = sg(θ), drawing the same dropout masks as the
    #    student's pass below (fork_rng restores the generator state after the target pass).
    devices = [ids.device] if ids.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        f_target, _ = consistency_function(denoiser, x_prev, sigma)
    f_student, pred = consistency_function(denoiser, x_next, sigma_next)

    terms = {
        "consistency": (pseudo_huber(f_student - f_target) / (sigma_next - sigma)).mean(),
        "ce": word_nll(pred.logits, ids),
        "rounding": word_nll(denoiser.embedding.logits(x0), ids),
    }
    loss = terms["consistency"] + cm.denoise_weight * terms["ce"] + config.diffusion.rounding_weight * terms["rounding"]
    return LossOutput.of(loss, terms)
