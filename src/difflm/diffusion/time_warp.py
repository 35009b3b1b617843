"""Time warping (CDCD, Dieleman et al. 2022, §3.3): train where the loss changes with t.

Uniform training times waste steps. On the 30-minute E2E run, the cross-entropy of the word
logits is below 0.02 for all t < 0.25, where the words can be read off x_t. Nearly two
thirds of its rise, from 0 to 2.65 nats, happens in t > 0.75. CDCD fits a monotone
piecewise-linear F(t) to the loss as a function of the noise level, normalises it to a
CDF, and draws t = F⁻¹(u), u ~ U[0, 1]. The density of t is then F′: high where the loss
changes fast, i.e. where the noise level decides words. Training keeps the plain
cross-entropy, unweighted. Every t still teaches the same posterior p(w | x_t); only the
share of steps spent on each t changes.

Here, as in CDCD, F is a running estimate:

    bins        B = 100 equal ranges of training index i ∈ 0..T−1
    curve[b]    running mean of the cross-entropy of the rows trained in bin b
    F           cummax(curve), normalised to run from 0 to 1 over the bins
    p_b         (1 − FLOOR)·(F_b − F_{b−1}) + FLOOR/B, uniform within the bin

The floor is a share of uniform draws. Every bin keeps being observed, so the curve follows
the model as it learns. Until every bin has been seen once, the draws are uniform. The
draws are stratified: the k-th of n rows gets u = (k + U)/n, so that a batch covers F evenly.

Under DDP every process observes the same all-reduced statistics, so their curves agree.
The state is a few hundred floats, kept in the run's train_state.json for exact resume.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

BINS = 100
FLOOR = 0.2  # share of uniform draws
DECAY = 0.99  # per observation of a bin; the curve spans the last ~100 visits


class TimeWarp:
    """The training-time distribution of one run; see the module docstring.

    Args:
        num_steps: T, the training steps of the schedule; `sample` returns indices in 0..T−1.
    """

    def __init__(self, num_steps: int) -> None:
        if num_steps < BINS:
            raise ValueError(f"time warping needs at least {BINS} diffusion steps, got {num_steps}")
        self.num_steps = num_steps
        self.curve = torch.zeros(BINS, dtype=torch.float64)
        self.seen = torch.zeros(BINS, dtype=torch.bool)

    def density(self) -> torch.Tensor:
        """p_b, the probability of each bin [BINS] (uniform until every bin was seen)."""
        uniform = torch.full((BINS,), 1.0 / BINS, dtype=torch.float64)
        if not bool(self.seen.all()):
            return uniform
        f = self.curve.cummax(0).values
        rise = torch.diff(f, prepend=torch.zeros(1, dtype=torch.float64)).clamp_min(0)
        rise[0] = 0.0  # F starts at the first bin's level: the loss at t → 0, not at "no loss"
        total = float(rise.sum())
        if total <= 0:
            return uniform
        return (1 - FLOOR) * rise / total + FLOOR * uniform

    def sample(self, n: int, uniform_draws: torch.Tensor) -> torch.Tensor:
        """n training indices, from n U[0, 1) draws (stratified here): LongTensor [n]."""
        p = self.density()
        cdf = torch.cumsum(p, 0)
        cdf[-1] = 1.0
        u = (torch.arange(n, dtype=torch.float64) + uniform_draws.double().cpu()) / n
        b = torch.searchsorted(cdf, u, right=True).clamp(max=BINS - 1)
        below = torch.where(b > 0, cdf[(b - 1).clamp(min=0)], torch.zeros_like(u))
        within = ((u - below) / p[b]).clamp(0, 1 - 1e-12)  # position inside the bin
        edges = torch.linspace(0, self.num_steps, BINS + 1, dtype=torch.float64)
        i = (edges[b] + within * (edges[b + 1] - edges[b])).floor().long()
        return i.clamp(0, self.num_steps - 1).to(uniform_draws.device)

    def observe(self, i: torch.Tensor, loss: torch.Tensor) -> None:
        """Fold the per-row losses [n] of rows trained at indices i [n] into the curve."""
        b = (i.detach().cpu().double() * BINS / self.num_steps).long().clamp(0, BINS - 1)
        stats = torch.zeros(2, BINS, dtype=torch.float64)
        stats[0].index_add_(0, b, loss.detach().cpu().double())
        stats[1].index_add_(0, b, torch.ones_like(b, dtype=torch.float64))
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats)
        sums, counts = stats
        hit = counts > 0
        mean = sums[hit] / counts[hit]
        keep = torch.where(self.seen[hit], DECAY ** counts[hit], torch.zeros_like(mean))
        self.curve[hit] = keep * self.curve[hit] + (1 - keep) * mean
        self.seen |= hit

    def state_dict(self) -> dict[str, list]:
        return {"curve": self.curve.tolist(), "seen": self.seen.tolist()}

    def load_state_dict(self, state: dict[str, list]) -> None:
        if len(state["curve"]) != BINS or len(state["seen"]) != BINS:
            raise ValueError(f"time-warp state must have {BINS} bins, got {len(state['curve'])}")
        self.curve = torch.tensor(state["curve"], dtype=torch.float64)
        self.seen = torch.tensor(state["seen"], dtype=torch.bool)
