"""The sampler of uniform diffusion (`diffusion/uniform.py`): K steps from a row of noise to words.

It takes a canvas whose blanks are the mask id, with the signature of `sampling/tokens.py`;
the blanks start as uniform noise (`prior`), the fixed tokens stay as they are.

- `ancestral`: UDLM's reverse process on the times t_k = 1 − k/K. Every blank position draws
  z_s from q(z_s | z_t, x_θ(z_t, t)), the posterior with the network's prediction plugged in
  (at temperature τ, within `allowed`). Any word may still change at every step; at s = 0
  the posterior keeps only words x_θ gives mass to, so `allowed` holds exactly.
- `psi`: Duo's Ψ-sampler (Deschenaux, Gulcehre and Sahoo 2026), a predictor-corrector. Each
  step draws from the mixture κ·q(z_s | z_t, x_θ) + (1 − κ)·q(z_s | x̂), where x̂ =
  q(x_0 | z_t, x_θ) is the posterior at s = 0 noised forward again to s: the corrector
  redraws every position from what the network now says of it, so a word written early
  against its neighbours can still change. The times run from 1 to a plateau t_c in the first
  half of the steps, stay there for 30% (pure correction at one noise level), then run to 0.
  κ = 1 without a plateau is `ancestral`; the last step (s = 0) is the posterior alone.
"""

from __future__ import annotations

import torch

from difflm.diffusion.masking import visible_share
from difflm.diffusion.uniform import posterior
from difflm.sampling.tokens import Network, TokenSampler, check_canvas, draw, word_probs


def prior(canvas: torch.Tensor, mask_id: int, vocab_size: int, generator: torch.Generator | None) -> torch.Tensor:
    """The canvas [B, L] at t = 1: each blank a token id drawn uniformly from the vocabulary."""
    device = generator.device if generator is not None else canvas.device
    noise = torch.randint(0, vocab_size, canvas.shape, generator=generator, device=device).to(canvas.device)
    return torch.where(canvas == mask_id, noise, canvas)


@torch.no_grad()
def ancestral(
    network: Network,
    canvas: torch.Tensor,
    *,
    mask_id: int,
    steps: int,
    generator: torch.Generator | None = None,
    allowed: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, int]:
    """UDLM's ancestral sampler (module docstring): the Ψ-sampler without its corrector, on
    the times t_k = 1 − k/K."""
    times = [1 - k / steps for k in range(steps + 1)] if steps > 0 else [1.0]
    return psi(
        network,
        canvas,
        mask_id=mask_id,
        steps=steps,
        generator=generator,
        allowed=allowed,
        temperature=temperature,
        kappa=1.0,
        times=times,
    )


#: The Ψ-sampler's share κ of the posterior in each step, its plateau time t_c, and the shares
#: of the steps that reach the plateau and that stay on it (module docstring; chosen on the
#: bundled grammar, docs/benchmarks.md, "Uniform-noise diffusion").
PSI_KAPPA = 0.1
PSI_PLATEAU = 0.1
PSI_SHARES = (0.5, 0.3)


def psi_times(steps: int, plateau: float = PSI_PLATEAU, shares: tuple[float, float] = PSI_SHARES) -> list[float]:
    """The steps + 1 times of the Ψ-sampler, from 1 down to 0 through the plateau (Duo's
    linear-constant-linear profile)."""
    down, stay = round(shares[0] * (steps + 1)), round(shares[1] * (steps + 1))
    rest = steps + 1 - down - stay
    if down < 1 or rest < 2:  # too few steps for a plateau and the way down from it
        return torch.linspace(1, 0, steps + 1, dtype=torch.float64).tolist()
    return [
        *torch.linspace(1, plateau, down, dtype=torch.float64).tolist(),
        *[plateau] * stay,
        *torch.linspace(plateau, 0, rest, dtype=torch.float64).tolist(),
    ]


@torch.no_grad()
def psi(
    network: Network,
    canvas: torch.Tensor,
    *,
    mask_id: int,
    steps: int,
    generator: torch.Generator | None = None,
    allowed: torch.Tensor | None = None,
    temperature: float = 1.0,
    kappa: float = PSI_KAPPA,
    times: list[float] | None = None,
) -> tuple[torch.Tensor, int]:
    """Duo's Ψ-sampler (module docstring); `times` (steps + 1, from 1 to 0) replace `psi_times`."""
    check_canvas(canvas, steps, temperature)
    times = psi_times(steps) if times is None else times
    if len(times) != steps + 1 or times[0] != 1 or times[-1] != 0:
        raise ValueError(f"the Ψ-sampler needs steps + 1 = {steps + 1} times from 1 to 0, got {len(times)}")
    free = canvas == mask_id
    z = prior(canvas, mask_id, mask_id, generator)  # the vocabulary ends where the blank id begins
    for t, s in zip(times[:-1], times[1:]):
        x = word_probs(network(z, t), allowed, temperature)
        step = posterior(z, x, t, s)
        if kappa < 1 and s > 0:
            alpha = float(visible_share(torch.tensor(s)))
            clean = posterior(z, x, t, 0.0)
            step = kappa * step + (1 - kappa) * (alpha * clean + (1 - alpha) / clean.shape[-1])
        z = torch.where(free, draw(step, generator), z)
    return z, steps


UNIFORM_SAMPLERS: dict[str, TokenSampler] = {"ancestral": ancestral, "psi": psi}
#: The sampler and word temperature of a uniform run unless told otherwise (docs/benchmarks.md,
#: "Uniform-noise diffusion": the corrector's redraws want a warmer draw than ancestral's 0.5).
UNIFORM_SAMPLER = "psi"
UNIFORM_TEMPERATURE = 0.7
