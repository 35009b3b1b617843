"""Gradient guidance of the latent between sampler steps (Diffusion-LM §5).

Notation (Li et al. 2022, §5, eq. 3; the sampler's `walk` in `difflm.sampling.grid`):

    x_s         the sampler's new state, x_{t−1} in the paper, [B, L, d]
    μ, σ        mean and standard deviation of the Gaussian p(x_s | x_t) it was drawn from
    c, w_c      a constraint and its weight
    log p(c|x)  the constraint's log-probability given the latent, [B]
    λ           fluency weight: how strongly x_s is held near the diffusion's own step
    J(x)        Σ_c w_c·log p(c | x) − λ·‖x − μ‖²/σ²          (per sample; ascended)
    g           ∇_x J
    K, η        inner gradient steps per sampler step, step size
    G           Adagrad accumulator Σ g² over the K inner steps of one sampler step
    ε           Adagrad's denominator guard

The three inner updates:

    sgd      x ← x + η·g
    sign     x ← x + η·sign(g)
    adagrad  G ← G + g²;  x ← x + η·g / (√G + ε)

Diffusion-LM's `scripts/infill_util.py` creates a fresh `torch.optim.Adagrad` at every
inner step; with an empty accumulator the Adagrad step is η·g/(|g| + ε) ≈ η·sign(g),
so the published method is `optimizer="sign"`. `"adagrad"` here keeps G across the K
inner steps of one sampler step (reset at the next), which is what Adagrad means; with
K = 1 the two coincide. The published code also divides the fluency term by σ rather
than σ², and uses 1 when the step is deterministic (σ = 0); the Gaussian's own
log-density −‖x − μ‖²/(2σ²) is what the paper's eq. 3 asks for, so σ² is used here and
the deterministic case reads `fallback_variance`.

Constraints that fix positions (infilling) also supply hooks: `overwrite` replaces the
known positions of x_s with a draw of q(x_s | EMB(w)) after the gradient steps, and
`fix_tokens` sets the final tokens there, so the given words come out exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from difflm.sampling.base import SampleOutput
from difflm.sampling.wrappers import DenoiserLike, DenoiserWrapper

if TYPE_CHECKING:
    from difflm.model.denoiser import Denoiser, Prediction

OPTIMIZERS = ("adagrad", "sign", "sgd")


def check_weight(weight: float) -> float:
    """A constraint's weight w_c as a float; ValueError unless it is a finite number ≥ 0."""
    if not (
        isinstance(weight, (int, float)) and not isinstance(weight, bool) and math.isfinite(weight) and weight >= 0
    ):
        raise ValueError(f"constraint weight must be a number ≥ 0, got {weight!r}")
    return float(weight)


class Constraint(Protocol):
    """What a guided sampler asks of a constraint.

    Attributes:
        weight: w_c, the constraint's share of the objective J.
    """

    weight: float

    def log_prob(self, x: torch.Tensor, t: float, denoiser: DenoiserLike) -> torch.Tensor:
        """log p(c | x) for a latent x [B, L, d] at time t: [B], differentiable in x.

        `denoiser` is the model being sampled (wrapped so that constraints reading the
        same f(x, t) share one evaluation); classifier constraints may ignore it.
        """
        ...


@runtime_checkable
class FixesPositions(Protocol):
    """Optional hooks of a constraint that knows some words outright (infilling)."""

    def overwrite(
        self, x: torch.Tensor, t: float, denoiser: DenoiserLike, generator: torch.Generator | None
    ) -> torch.Tensor:
        """x [B, L, d] with its known positions replaced by a draw of q(x_t | EMB(w))."""
        ...

    def fix_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final token ids [B, L] with the known positions set to the given words."""
        ...


class SharedDenoiser(DenoiserWrapper):
    """The denoiser as constraints see it: the last prediction is shared.

    Several constraints usually read the same prediction f(x, t). A call with the very
    tensor x and the same t as the previous call returns that prediction (with its
    autograd graph), so one inner guidance step costs one evaluation however many
    constraints read it.

    Args:
        denoiser: the x̂0 network being sampled (or a wrapper of it).
    """

    def __init__(self, denoiser: Denoiser | DenoiserWrapper) -> None:
        super().__init__(denoiser)
        self._last: tuple[torch.Tensor, torch.Tensor, Prediction] | None = None

    def __call__(
        self, x_t: torch.Tensor, t: torch.Tensor, *, cond: Any = None, self_cond: torch.Tensor | None = None
    ) -> Prediction:
        plain = cond is None and self_cond is None  # only unconditioned calls are shared
        if plain and self._last is not None and self._last[0] is x_t and torch.equal(self._last[1], t):
            return self._last[2]
        prediction = self.denoiser(x_t, t, cond=cond, self_cond=self_cond)
        if plain:
            self._last = (x_t, t, prediction)
        return prediction

    def forget(self) -> None:
        """Drop the shared prediction (and the graph it holds)."""
        self._last = None


def _active_predicate(active: tuple[float, float] | Callable[[float], bool]) -> Callable[[float], bool]:
    """Turn `active` into a predicate on t; a pair (t_min, t_max) means t_min ≤ t ≤ t_max."""
    if callable(active):
        return active
    if not (isinstance(active, Sequence) and len(active) == 2):
        raise ValueError(f"active must be a pair (t_min, t_max) or a predicate on t, got {active!r}")
    t_min, t_max = (float(v) for v in active)
    if not 0 <= t_min <= t_max <= 1:
        raise ValueError(f"active must satisfy 0 ≤ t_min ≤ t_max ≤ 1, got ({t_min}, {t_max})")
    return lambda t: t_min <= t <= t_max


class GradientGuidance:
    """Diffusion-LM's guided update: K gradient steps on x_s after each sampler step.

    Implements the sampler's `Guidance` protocol: `guidance(x, *, t, mean, std) -> x`.

    Args:
        denoiser: the model being sampled (constraints read its logits at (x_s, t)).
        constraints: the constraints c, combined as Σ_c w_c·log p(c | x).
        steps: K, gradient steps per sampler step (0: only the overwrite hooks run).
        step_size: η.
        optimizer: "adagrad", "sign" (Diffusion-LM's effective update) or "sgd".
        fluency_weight: λ ≥ 0.
        active: (t_min, t_max) or a predicate on t: the times of x_s at which the
            gradient steps run. The default skips the last 5% of the trajectory, as
            Diffusion-LM skips t < 10 of 200.
        adagrad_eps: ε.
        fallback_variance: σ² in the fluency term when the step is deterministic (σ = 0,
            e.g. DDIM with η = 0).
        generator: randomness of the overwrite hooks' forward-noising.

    Raises:
        ValueError: no constraints, or a setting out of range.
    """

    def __init__(
        self,
        denoiser: Denoiser | DenoiserWrapper,
        constraints: Sequence[Constraint],
        *,
        steps: int = 3,
        step_size: float = 0.1,
        optimizer: str = "sign",
        fluency_weight: float = 0.01,
        active: tuple[float, float] | Callable[[float], bool] = (0.05, 1.0),
        adagrad_eps: float = 1e-10,
        fallback_variance: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        if not constraints:
            raise ValueError("guidance needs at least one constraint")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"guidance steps K must be an integer ≥ 0, got {steps!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown guidance optimizer {optimizer!r}; valid choices: {', '.join(OPTIMIZERS)}")
        for name, value in (
            ("step_size", step_size),
            ("adagrad_eps", adagrad_eps),
            ("fallback_variance", fallback_variance),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not (math.isfinite(fluency_weight) and fluency_weight >= 0):
            raise ValueError(f"fluency_weight λ must be a number ≥ 0, got {fluency_weight!r}")
        self.denoiser = SharedDenoiser(denoiser)
        self.constraints = list(constraints)
        self.steps = steps
        self.step_size = step_size
        self.optimizer = optimizer
        self.fluency_weight = fluency_weight
        self.is_active = _active_predicate(active)
        self.adagrad_eps = adagrad_eps
        self.fallback_variance = fallback_variance
        self.generator = generator
        self._hooks = [c for c in self.constraints if isinstance(c, FixesPositions)]

    def objective(self, x: torch.Tensor, t: float, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """J(x) = Σ_c w_c·log p(c | x) − λ·‖x − μ‖²/σ², per sample: [B]."""
        total = sum(c.weight * c.log_prob(x, t, self.denoiser) for c in self.constraints)
        variance = torch.as_tensor(std).to(x) ** 2
        variance = torch.where(variance > 0, variance, torch.full_like(variance, self.fallback_variance))
        fluency = ((x - mean) ** 2 / variance).flatten(1).sum(-1)
        return total - self.fluency_weight * fluency

    def _direction(self, g: torch.Tensor, accumulator: torch.Tensor) -> torch.Tensor:
        """The step direction for gradient g; updates the Adagrad accumulator G in place."""
        if self.optimizer == "sgd":
            return g
        if self.optimizer == "sign":
            return g.sign()
        accumulator.add_(g * g)
        return g / (accumulator.sqrt() + self.adagrad_eps)

    def __call__(self, x: torch.Tensor, *, t: float, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Edit the sampler's new state x_s [B, L, d] at time t, drawn from N(μ, σ²)."""
        if self.is_active(t) and self.steps > 0:
            x = self._ascend(x.detach(), t, mean.detach(), std)
        for hook in self._hooks:
            x = hook.overwrite(x, t, self.denoiser, self.generator)
        return x

    def _ascend(self, x: torch.Tensor, t: float, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """K steps of gradient ascent on J from x_s."""
        accumulator = torch.zeros_like(x)  # G: fresh at every sampler step
        # The sampler runs under no_grad; the gradient is taken w.r.t. x only (not the weights).
        with torch.enable_grad():
            for _ in range(self.steps):
                x = x.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self.objective(x, t, mean, std).sum(), x)
                x = x.detach() + self.step_size * self._direction(g, accumulator)
                self.denoiser.forget()
        return x

    def finalize(self, output: SampleOutput) -> SampleOutput:
        """The sampler's output with known positions' tokens set exactly.

        The last sampler step lands on x̂0 without a guidance call, so positions that a
        constraint knows outright are set here (in the tokens; x̂0 is left as sampled).
        """
        tokens = output.tokens
        for hook in self._hooks:
            tokens = hook.fix_tokens(tokens)
        return replace(output, tokens=tokens)
