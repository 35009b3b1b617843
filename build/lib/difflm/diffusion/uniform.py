"""The uniform-noise forward process of uniform diffusion (UDLM, Schiff et al. 2024; Duo, Sahoo et al. 2025).

Notation: x a row of word ids [B, L]; N the number of token ids (the vocabulary); z_t the
row at time t ∈ [0, 1]; α_t = 1 − t, MDLM's log-linear schedule (`masking.visible_share`).
Each position is kept with probability α_t and otherwise replaced by a token drawn
uniformly (perhaps itself):

    q(z_t,i | x_i) = α_t·[z_t,i = x_i] + (1 − α_t)/N

For s < t, with α_{t|s} = α_t/α_s, the posterior given x (D3PM)

    q(z_s | z_t, x) ∝ (α_{t|s}·[z_s = z_t] + (1 − α_{t|s})/N) · (α_s·x + (1 − α_s)/N)

is linear in the one-hot x, so a model plugs in its prediction x_θ(z_t) ∈ Δ^N (UDLM's
sampler). With x̄ = N·α_t·x + 1 − α_t (x̄_θ likewise) and i = z_t,i, the continuous-time
NELBO (UDLM eq. 18: SEDD's denoising score entropy with the ratio x̄_θ,j/x̄_θ,i standing for
q_t(j)/q_t(i)) is, summed over positions,

    −log p(x) ≤ ∫_0^1 E_{z_t} (−α'_t/(N·α_t))·[ N/x̄_θ,i − N/x̄_i − Σ_{j≠i} (x̄_j/x̄_i)·log(x̄_θ,j·x̄_i / (x̄_θ,i·x̄_j)) ] dt

Each bracket is a Bregman divergence of the model's ratios from the data's, so ≥ 0. The
bound is tight when x_θ at position i is p(x_i | z_t with position i left out): the
plug-in posterior is then the exact reverse step, and x̄_θ's ratios are q_t's own (tested by
enumeration).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from difflm.diffusion.masking import visible_share


def noise_rows(
    ids: torch.Tensor, t: torch.Tensor, u: torch.Tensor, words: torch.Tensor, noisable: torch.Tensor
) -> torch.Tensor:
    """z_t ~ q(z_t | x) from uniforms u [B, L] and uniformly drawn token ids `words` [B, L]:
    each noisable position [B, L] of ids [B, L] replaced when u < 1 − α_t, t [B]."""
    replaced = noisable & (u < (1 - visible_share(t))[:, None])
    return torch.where(replaced, words, ids)


def log_likelihood_of_own(z_t: torch.Tensor, t: torch.Tensor, N: int) -> torch.Tensor:
    """log q(z_t,i | x_i = w) for every word w: [B, L, N], for rows z_t [B, L] at times t [B].
    Bayes: p(x_i | z_t) ∝ p(x_i | z_t without i)·q(z_t,i | x_i), so adding it to the log of the
    one gives the other."""
    alpha = visible_share(t.float())[:, None, None]
    return (alpha * F.one_hot(z_t, N).float() + (1 - alpha) / N).log()


def posterior(z_t: torch.Tensor, x: torch.Tensor, t: float, s: float) -> torch.Tensor:
    """q(z_s | z_t, x) [B, L, N] for z_t [B, L] and x [B, L, N] one-hot or a prediction in Δ^N."""
    N = x.shape[-1]
    a_t, a_s = float(visible_share(torch.tensor(t))), float(visible_share(torch.tensor(s)))
    a_ts = a_t / a_s
    stay = F.one_hot(z_t, N).to(x.dtype)
    joint = (a_ts * stay + (1 - a_ts) / N) * (a_s * x + (1 - a_s) / N)
    return joint / joint.sum(-1, keepdim=True)


def nelbo_integrand(z_t: torch.Tensor, ids: torch.Tensor, x_theta: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The integrand of the NELBO at each position [B, L]: (−α'_t/(N·α_t))·[…] of the module
    docstring for rows z_t [B, L] of clean ids [B, L], predictions x_θ [B, L, N], t [B]
    (α'_t = −1)."""
    N = x_theta.shape[-1]
    alpha = visible_share(t)[:, None, None]
    xbar = N * alpha * F.one_hot(ids, N).to(x_theta.dtype) + (1 - alpha)
    xbar_theta = N * alpha * x_theta + (1 - alpha)
    at = z_t[..., None]
    xbar_i, xbar_theta_i = xbar.gather(-1, at), xbar_theta.gather(-1, at)
    # The j = i term of the sum is 1·log 1 = 0, so the sum may run over every j.
    ratios = xbar / xbar_i
    log_terms = xbar_theta.log() - xbar_theta_i.log() - xbar.log() + xbar_i.log()
    bracket = N / xbar_theta_i - N / xbar_i - (ratios * log_terms).sum(-1, keepdim=True)
    return (bracket / (N * alpha)).squeeze(-1)
