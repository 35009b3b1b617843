"""Sampler distillation (Luhman & Luhman 2021): a one-step student of the teacher's DDPM sampler.

Notation:

    x_T          the noise a sample starts from, [B, L, d]
    S(x_T)       the teacher's words: K DDPM steps on the trailing grid at temperature τ,
                 whose step noises are fixed functions of x_T (below), so that S is a
                 deterministic map from x_T to a sentence (`distill.sampler=ddpm`; or
                 K DDIM steps, η = 0, deterministic by construction: `ddim`)
    Q_k          a fixed orthogonal d×d matrix for step k (seeded by k, the same in every run)
    z_k          x_T·Q_k at each position, the noise of step k
    f(x, t)      the student: the teacher's network, trained on

    L = −log p_f(S(x_T) | x_T, t = 1)                     "distill"
      + denoise_weight·L_e2e(f)                           "ce", "prior", "rounding"

The first term teaches one evaluation at t = 1 to write the sentence that K teacher steps
would write from the same x_T; the word logits make it a cross-entropy on the teacher's
words, the form a categorical output wants. The second is the diffusion objective on the
corpus: it keeps f a denoiser, so that the few-step sampler (`sampling/distilled.py`) can
re-noise the draft and refine it with the same network.

Why DDPM with tied noise by default rather than DDIM, the usual deterministic teacher: at
the sampling temperature DDIM is much the weaker sampler (grammar corpus, L = 48 run, 512
samples: DDIM 8 steps 15.6%, DDPM 8 steps 26.2% grammatical); its fresh noise is what lets
DDPM revise a word. Each z_k is exactly N(0, I) and, for a random rotation, nearly
uncorrelated with x_T and the other z_j, so DDPM keeps its quality (21.9% with these z_k),
and the whole trajectory becomes a function of x_T that a network can learn. A rotation
within each position keeps what x_T says about a position at that position (a permutation
across positions kept the quality too, 26.4%, but a student learned nothing from it). On
an L = 24 run the DDPM teacher's student drafts better than the DDIM teacher's (two steps:
16.0% against 12.9% grammatical, docs/benchmarks.md), though DDIM is easier to copy.
"""
from __future__ import annotations

from functools import partial

import torch

from difflm.config import TEACHER_SAMPLERS, Config
from difflm.diffusion.losses import Draws, LossOutput, e2e_loss, word_nll
from difflm.model.denoiser import Denoiser
from difflm.sampling import ddim, ddpm
from difflm.sampling.grid import walk


def step_rotation(step: int, dim: int) -> torch.Tensor:
    """Q_k: a fixed orthogonal [d, d] matrix for step k (float64)."""
    generator = torch.Generator().manual_seed(step)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    return q


def tied_noise(x_T: torch.Tensor, step: int) -> torch.Tensor:
    """z_k = x_T·Q_k at every position: N(0, I), and a fixed function of x_T."""
    return x_T @ step_rotation(step, x_T.shape[-1]).to(x_T)


def teacher_words(teacher: Denoiser, x_T: torch.Tensor, *, sampler: str, steps: int, temperature: float) -> torch.Tensor:
    """S(x_T): the word ids [B, L] that `steps` steps of the teacher's sampler write from x_T.

    `sampler` is "ddim" (η = 0) or "ddpm" (with the tied noise z_k).
    """
    if sampler not in TEACHER_SAMPLERS:
        raise ValueError(f"distill.sampler must be one of {', '.join(TEACHER_SAMPLERS)}, got {sampler!r}")
    update = ddpm.update if sampler == "ddpm" else partial(ddim.update, eta=0.0)
    return walk(
        update, teacher, tuple(x_T.shape), steps=steps, grid="trailing", temperature=temperature,
        start=x_T, noise=lambda n: tied_noise(x_T, n),
    ).tokens


def distillation_loss(
    denoiser: Denoiser,
    ids: torch.Tensor,
    config: Config,
    *,
    generator: torch.Generator | None = None,
    target: Denoiser | None = None,
    teacher: Denoiser | None = None,
) -> LossOutput:
    """The student's loss on a batch: distillation at t = 1 plus the diffusion objective on `ids`.

    Args:
        denoiser: the student (`model.generator=distilled`), initialised from the teacher.
        ids: word ids [B, L] of corpus sentences (for the diffusion term; B also sets the
            number of teacher samples).
        config: the run config (`distill` section, `diffusion` for the denoising term).
        generator: source of x_T and of the diffusion term's draws.
        target: unused.
        teacher: the frozen diffusion model whose sampler is distilled.

    Raises:
        ValueError: no teacher.
    """
    if teacher is None:
        raise ValueError("model.generator=distilled needs a teacher run (train.teacher)")
    dc = config.distill
    B, L = ids.shape
    x_T = Draws(generator, ids.device).randn((B, L, denoiser.embedding.dim))
    with torch.no_grad():
        words = teacher_words(teacher, x_T, sampler=dc.sampler, steps=dc.teacher_steps, temperature=dc.temperature)
    draft = denoiser(x_T, torch.ones(B, device=ids.device))
    distill = word_nll(draft.logits, words)
    if dc.denoise_weight == 0:
        return LossOutput.of(distill, {"distill": distill})
    diffusion = e2e_loss(denoiser, ids, config.diffusion, generator=generator)
    loss = distill + dc.denoise_weight * diffusion.loss
    terms = {key: value for key, value in diffusion.terms.items() if key != "loss"}
    return LossOutput(loss=loss, terms={"loss": loss.item(), "distill": distill.item(), **terms})
