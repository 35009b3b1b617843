"""A teacher's sampler as a deterministic map from noise to words: S(x_T) of sampler distillation.

Notation (`difflm.objectives.distillation` says why DDPM with tied noise is the default):

    x_T          the noise a sample starts from, [B, L, d]
    Q_k          a fixed orthogonal d×d matrix for step k (seeded by k, the same in every run)
    z_k          x_T·Q_k at each position, the noise of step k
    S(x_T)       the words of K steps of the teacher's sampler on the trailing grid from x_T:
                 DDPM with the step noises z_k, or DDIM with η = 0
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import torch

from difflm.config import TEACHER_SAMPLERS
from difflm.sampling import ddim, ddpm
from difflm.sampling.grid import walk

if TYPE_CHECKING:
    from difflm.model.denoiser import Denoiser


def step_rotation(step: int, dim: int) -> torch.Tensor:
    """Q_k: a fixed orthogonal [d, d] matrix for step k (float64)."""
    generator = torch.Generator().manual_seed(step)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    return q


def tied_noise(x_T: torch.Tensor, step: int) -> torch.Tensor:
    """z_k = x_T·Q_k at every position: N(0, I), and a fixed function of x_T."""
    return x_T @ step_rotation(step, x_T.shape[-1]).to(x_T)


def teacher_words(
    teacher: Denoiser, x_T: torch.Tensor, *, sampler: str, steps: int, temperature: float
) -> torch.Tensor:
    """S(x_T): the word ids [B, L] that `steps` steps of the teacher's sampler write from x_T.

    `sampler` is "ddim" (η = 0) or "ddpm" (with the tied noise z_k).
    """
    if sampler not in TEACHER_SAMPLERS:
        raise ValueError(f"distill.sampler must be one of {', '.join(TEACHER_SAMPLERS)}, got {sampler!r}")
    update = ddpm.update if sampler == "ddpm" else partial(ddim.update, eta=0.0)
    return walk(
        update,
        teacher,
        tuple(x_T.shape),
        steps=steps,
        grid="trailing",
        temperature=temperature,
        start=x_T,
        noise=lambda n: tied_noise(x_T, n),
    ).tokens
