"""Stand-ins for the network with known answers, shared by the one/few-step tests.

On a single sentence the data are one point μ = EMB(w), every trajectory is a straight line
and the exact x̂0 of any jump is μ (also the exact D of the consistency function, whose
c_skip = σ_min/σ makes f the jump to σ_min). On Gaussian data x0 ~ N(μ, s0² I) the flow map is affine
in closed form: x_τ' = (1 − τ')μ + (σ(τ')/σ(τ))·(x_τ − (1 − τ)μ), σ(τ)² = (1 − τ)²s0² + τ².
"""

from types import SimpleNamespace

import torch

from difflm.config import ModelConfig
from difflm.diffusion.flowmap import FlowPath
from difflm.diffusion.paths import tau_of_t
from difflm.diffusion.schedules import make_schedule
from difflm.model.denoiser import Denoiser
from difflm.model.embedding import WordEmbedding

T, V, L, D = 50, 7, 4, 6
WORDS = torch.tensor([1, 4, 2, 0])


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class Oracle:
    """A fake denoiser: x̂0 = fn(x, s, jump) in the RF path's own coordinates, from the VP inputs it is given."""

    self_conditioning = False

    def __init__(self, fn):
        torch.manual_seed(0)
        self.schedule = make_schedule("sqrt", T)
        self.embedding = WordEmbedding(V, D, normalize=True)
        self.mu = self.embedding(WORDS).detach()
        self.path = FlowPath.of(self.schedule)
        self.fn = fn

    def __call__(self, x_vp, t, *, jump=None, cond=None, self_cond=None):
        tau = tau_of_t(self.schedule, t.double()).view(-1, 1, 1)
        x = x_vp.double() * ((1 - tau) ** 2 + tau**2).sqrt()
        jump = torch.zeros_like(t) if jump is None else jump
        x0 = self.fn(self, x, tau / self.path.tau_max, jump.double().view(-1, 1, 1)).to(x_vp.dtype)
        return SimpleNamespace(x0=x0, logits=self.embedding.logits(x0))


def gaussian_flow_map(s0):
    """x̂0 of the exact jump s → s − jump for data N(μ, s0² I); jump 0 is the posterior mean."""

    def fn(oracle, x, s, d):
        mu, tau_max = oracle.mu.double(), oracle.path.tau_max
        tau, tau_r = tau_max * s, tau_max * (s - d)
        std = lambda tau: ((1 - tau) ** 2 * s0**2 + tau**2).sqrt()  # noqa: E731
        x_r = (1 - tau_r) * mu + std(tau_r) / std(tau) * (x - (1 - tau) * mu)
        posterior_mean = mu + (1 - tau) * s0**2 / std(tau) ** 2 * (x - (1 - tau) * mu)
        return torch.where(d > 0, (s * x_r - (s - d) * x) / torch.where(d > 0, d, 1), posterior_mean)

    return fn


def the_point(oracle, x, s, d):
    return oracle.mu.double().expand_as(x)


def gaussian_point(oracle, s0, s, seed):
    """x_s for data N(μ, s0² I), [B, L, d]."""
    g = gen(seed)
    x0 = oracle.mu + s0 * torch.randn((len(s), L, D), generator=g)
    return oracle.path.point(x0, torch.randn(x0.shape, generator=g), s)


def tiny_denoiser(generator="meanflow", seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(embed_dim=D, hidden=32, layers=2, heads=4, dropout=0.0, generator=generator)
    return Denoiser(config, V, L, make_schedule("sqrt", T))
