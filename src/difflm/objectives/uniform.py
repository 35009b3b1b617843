"""The objectives of uniform diffusion (`diffusion/uniform.py`), per modelled token (nats).

    nelbo      E_{t ~ U(ε, 1 − ε)} Σ_i (1/(N·α_t))·[N/x̄_θ,i − N/x̄_i − Σ_{j≠i} (x̄_j/x̄_i)·log(…)]   (UDLM)
    posterior  E_{t ~ U(ε, 1 − ε)} Σ_i −log p_θ(x_i | z_t)

with z_t ~ q(z_t | x). `diffusion.uniform_loss` picks the one descended; both are logged.
The posterior cross-entropy scores the network's own softmax, p_θ(x_i | z_t) ∝ x_θ,i·q(z_t,i | x_i)
(`model/tokens.py`), at every noisable position, noised or not: its optimum is the true
posterior, which makes x_θ exact, as the NELBO's does, without the NELBO's heavy weights (N/x̄_i
grows as 1/t at a noised position). Both use the masked objective's low-discrepancy times,
fixed tokens (START; under length anchors END and the PAD tail, never noised) and
classifier-free condition dropout. The times stop ε short of 1 as well as of 0: at α_t = 0
the NELBO's weight 1/α_t is infinite and its bracket exactly 0.
"""

from __future__ import annotations

from difflm.config import Config
from difflm.diffusion.uniform import log_likelihood_of_own, nelbo_integrand
from difflm.model.tokens import TokenDenoiser
from difflm.objectives.base import Batch, Draws, Frozen, LossOutput, drop_conditions, objective, word_nll
from difflm.objectives.masked import T_MIN, noised_rows, stratified_times


@objective
def uniform_loss(model: TokenDenoiser, batch: Batch, config: Config, draws: Draws, frozen: Frozen) -> LossOutput:
    """The loss `diffusion.uniform_loss` names, per modelled token, of a batch of rows [B, L] and
    their conditions, with the other logged (`frozen` unused)."""
    ids = batch.ids
    t = stratified_times(draws, len(ids)).clamp_max(1 - T_MIN)
    modelled = model.noisable(ids)
    z = noised_rows(model, ids, t, draws)
    cond = drop_conditions(batch.cond, draws, config.diffusion.cond_drop)
    logits = model(z, t, cond=cond)  # log x_θ + const
    nelbo = (nelbo_integrand(z, ids, logits.softmax(-1), t) * modelled).sum() / modelled.sum().clamp_min(1)
    posterior_logits = logits + log_likelihood_of_own(z, t, model.vocab_size)  # log p_θ(x_i | z_t) + const
    posterior = word_nll(posterior_logits, ids, modelled)
    terms = {"nelbo": nelbo, "posterior_ce": posterior}
    return LossOutput.of(nelbo if config.diffusion.uniform_loss == "nelbo" else posterior, terms)
