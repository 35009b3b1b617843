"""The end-to-end objective of Diffusion-LM (§4.1), and its cross-entropy variant.

Notation: w word ids [B, L]; EMB(w) [B, L, d]; x0 ~ q(x0 | w) = N(EMB(w), σ0² I) with
σ0² = 1 − ᾱ_0 (the first step's noise, as in the paper's code); i ~ U{0..T−1} a training
step, t = (i+1)/T its time; x_t = √ᾱ_i·x0 + √(1−ᾱ_i)·ε.

    L_e2e = E_i ‖f(x_t, t) − x0‖²  (i > 0)                   "mse"
          + ‖EMB(w) − f(x_1, 1/T)‖²  (i = 0)                  "t0"
          + ‖√ᾱ_{T−1}·x0‖²                                    "prior"   (mean of q(x_T|x0) → 0)
          − log p(w | x0)                                     "rounding"

With `predict` = eps or v the squared error is measured in that view (same x̂0, other
weighting). With `predict` = logits (CDCD/Plaid) the network is trained by the
cross-entropy −log p̂(w | x_t) of its own logits ("ce") instead of the squared error.

With length anchors (`model/anchors.py`) END and the PAD tail after it stay clean in x_t and
the denoising term counts only the other positions: the denoiser learns p(w | n).

With left-to-right noise (`diffusion.sweep` > 0, `diffusion/sweep.py`) a share of the rows
get a step per position i_p instead of one per row, on a line that leaves the left
positions cleaner; ᾱ, the time input and the first-step target are then per position.

A conditioned denoiser (classifier-free guidance, Ho & Salimans 2022) gets each row's
condition c, replaced by the null condition ∅ (c = 0) with probability p = cond_drop, so
one network learns both f(x_t, t, c) and f(x_t, t, ∅).
"""

from __future__ import annotations

import torch

from difflm.config import Config, DiffusionConfig
from difflm.diffusion import process
from difflm.diffusion.sweep import sweep_times
from difflm.model.anchors import anchor, anchors_of
from difflm.model.denoiser import Denoiser
from difflm.objectives.base import Batch, Draws, Frozen, LossOutput, drop_conditions, objective, word_nll


@objective
def e2e_loss(denoiser: Denoiser, batch: Batch, config: Config, draws: Draws, frozen: Frozen) -> LossOutput:
    """Diffusion-LM's end-to-end loss on a batch of padded sentences.

    Args:
        denoiser: the model (its schedule and embedding are used).
        batch: word ids [B, L], and the rows' conditions [B, P] for a conditioned
            denoiser (None trains unconditionally).
        config: the run config; `diffusion` holds the rounding weight, self-conditioning
            and condition-drop probabilities.
        draws: source of t, ε and the self-conditioning and condition-drop coin flips.
        frozen: unused.
    """
    ids, cond, dc = batch.ids, batch.cond, config.diffusion
    schedule = denoiser.schedule
    B, device = ids.shape[0], ids.device
    alphas_cumprod = schedule.alphas_cumprod.to(device=device, dtype=torch.float32)

    # 1. Lift words into the continuous space: x0 ~ N(EMB(w), σ0² I).
    emb = denoiser.embedding(ids)  # [B, L, d]
    sigma0 = (1 - alphas_cumprod[0]).sqrt()
    x0 = emb + sigma0 * draws.randn(tuple(emb.shape))

    # 2. Noise it at a uniformly drawn step i [B, 1], or, in the rows on the left-to-right
    #    sweep, at a step per position [B, L].
    T = schedule.num_steps
    i = draws.randint(0, T, B)[:, None]
    anchors = anchors_of(ids) if denoiser.lengths is not None else None
    if dc.sweep:
        i = _swept_steps(i, anchors, ids.shape[1], denoiser.max_len, T, dc, draws)
    abar = alphas_cumprod[i][..., None]
    x_t = process.q_sample(x0, abar, draws.randn(tuple(emb.shape)))
    t = _times(i, T)
    if anchors is not None:
        x_t = anchor(x_t, anchors, denoiser.embedding)

    # 3. Condition dropout: a share p of the rows see ∅ (c = 0), teaching f(x_t, t, ∅).
    cond = drop_conditions(cond, draws, dc.cond_drop)

    # 4. Self-conditioning (Analog Bits): for a random half, a first no-grad pass
    #    supplies x̂0 as an extra input; the rest see zeros, as at the first sampling step.
    self_cond = None
    if denoiser.self_conditioning:
        self_cond = torch.zeros_like(x_t)
        use = draws.rand(B) < dc.self_cond_prob
        if use.any():
            x_prev, t_prev = x_t[use], t[use]
            if dc.self_cond_gap > 0:
                # A sampler's previous step was noisier (by 1/K of the path with K steps): take
                # the first pass at x_t' ~ q(x_t' | x_t) with t' − t ~ U[0, gap] (in whole
                # training steps), so that few-step sampling feeds the network the kind of
                # self-conditioning input it was trained on (FastDiSS).
                gap = (draws.rand(len(x_prev)) * dc.self_cond_gap * T).long()
                j = (i[use] + gap[:, None]).clamp(max=T - 1)
                ratio = (alphas_cumprod[j] / alphas_cumprod[i[use]])[..., None]
                x_prev = ratio.sqrt() * x_prev + (1 - ratio).sqrt() * draws.randn(tuple(x_prev.shape))
                t_prev = _times(j, T)
                if anchors is not None:
                    x_prev = anchor(x_prev, anchors[use], denoiser.embedding)
            with torch.no_grad():
                self_cond[use] = denoiser(x_prev, t_prev, cond=None if cond is None else cond[use]).x0.detach()

    pred = denoiser(x_t, t, cond=cond, self_cond=self_cond)
    terms: dict[str, torch.Tensor] = {}

    # 5. Denoising term, in the network's own view (x0, eps, v) or as cross-entropy.
    kind = denoiser.config.predict
    counted = None if anchors is None else (~anchors).float()  # [B, L]: the positions to denoise
    if kind == "logits":
        terms["ce"] = word_nll(pred.logits, ids, counted)
        denoise = terms["ce"]
    else:
        # The first step regresses onto EMB(w) itself, tying f(x_1) to the embeddings.
        target_x0 = torch.where((i == 0)[..., None], emb, x0)
        error = (process.from_x0(kind, pred.x0, x_t, abar) - process.from_x0(kind, target_x0, x_t, abar)) ** 2
        if counted is None:
            per_example = error.mean(dim=(1, 2))  # [B]
        else:
            per_example = (error.mean(-1) * counted).sum(1) / counted.sum(1)
        denoise = per_example.mean()
        # Terms absent from a batch are left out (not logged as 0) so averages stay honest.
        first = (i == 0).all(1)
        if (~first).any():
            terms["mse"] = per_example[~first].mean()
        if first.any():
            terms["t0"] = per_example[first].mean()

    # 6. Prior: q(x_T | x0) should be N(0, I); penalise the mean it keeps.
    terms["prior"] = (alphas_cumprod[-1] * x0**2).mean()
    # 7. Rounding: −log p(w | x0) with the tied head.
    terms["rounding"] = word_nll(denoiser.embedding.logits(x0), ids)

    loss = denoise + terms["prior"] + dc.rounding_weight * terms["rounding"]
    return LossOutput.of(loss, terms)


def _swept_steps(
    i: torch.Tensor, anchors: torch.Tensor | None, width: int, max_len: int, T: int, dc: DiffusionConfig, draws: Draws
) -> torch.Tensor:
    """Training steps [B, width]: the rows' shared steps i [B, 1], or for a share dc.sweep of
    them the steps of the left-to-right sweep at a clock u ~ U[0, 1 + λ] (`diffusion/sweep.py`)."""
    B = i.shape[0]
    swept = draws.rand(B) < dc.sweep
    u = draws.rand(B) * (1 + dc.sweep_lag)
    # The sweep runs over a row's words (to its END) under length anchors, else over the model's L.
    span = (~anchors).sum(1) if anchors is not None else torch.full((B,), max_len - 1, device=i.device)
    t = sweep_times(u, span, width, dc.sweep_lag)
    steps = ((t * T).ceil().long() - 1).clamp(0, T - 1)  # t = 0, a clean position, is the first step
    return torch.where(swept[:, None], steps, i)


def _times(i: torch.Tensor, T: int) -> torch.Tensor:
    """The denoiser's times of training steps i: [B] for shared steps [B, 1], else [B, L]."""
    t = (i + 1).float() / T
    return t[:, 0] if t.shape[1] == 1 else t
