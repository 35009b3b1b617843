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
the sampling temperature DDIM is much the weaker sampler; its fresh noise is what lets DDPM
revise a word. Each z_k is exactly N(0, I) and, for a random rotation, nearly uncorrelated
with x_T and the other z_j, so DDPM keeps its quality, and the whole trajectory becomes a
function of x_T that a network can learn. A rotation within each position keeps what x_T
says about a position at that position (a permutation across positions kept the quality
too, but a student learned nothing from it). The DDPM teacher's students draft better,
though DDIM is easier to copy; the figures are in docs/benchmarks.md ("Sampler distillation").
"""

from __future__ import annotations

import torch

from difflm.config import Config
from difflm.model.denoiser import Denoiser
from difflm.objectives.base import Batch, Draws, Frozen, LossOutput, objective, word_nll
from difflm.objectives.diffusion import e2e_loss


@objective
def distillation_loss(denoiser: Denoiser, batch: Batch, config: Config, draws: Draws, frozen: Frozen) -> LossOutput:
    """The student's loss on a batch: distillation at t = 1 plus the diffusion objective on `ids`.

    Args:
        denoiser: the student (`model.generator=distilled`), initialised from the teacher.
        batch: word ids [B, L] of corpus sentences (for the diffusion term; B also sets
            the number of teacher samples).
        config: the run config (`distill` section, `diffusion` for the denoising term).
        draws: source of x_T and of the diffusion term's draws.
        frozen: `teacher_words`, S(x_T) of the frozen teacher whose sampler is distilled
            (`difflm.sampling.teacher.teacher_words`).

    Raises:
        ValueError: no teacher.
    """
    ids = batch.ids
    if frozen.teacher_words is None:
        raise ValueError("model.generator=distilled needs a teacher run (train.teacher)")
    dc = config.distill
    B, L = ids.shape
    x_T = draws.randn((B, L, denoiser.embedding.dim))
    with torch.no_grad():
        words = frozen.teacher_words(x_T)
    draft = denoiser(x_T, torch.ones(B, device=ids.device))
    distill = word_nll(draft.logits, words)
    if dc.denoise_weight == 0:
        return LossOutput.of(distill, {"distill": distill})
    diffusion = e2e_loss(denoiser, batch, config, generator=draws.generator)
    return diffusion.plus("distill", distill, scale=dc.denoise_weight)
