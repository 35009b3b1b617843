"""Contextual rounding at sampling: the last state's words, written left to right by the decoder.

Notation (`difflm.model.contextual`): x̂0 the sampler's final estimate [B, L, d]; t_d the
rounding time (`rounding.t_sample`).

    x_{t_d} = √ᾱ(t_d)·x̂0 + √(1 − ᾱ(t_d))·z,   z ~ N(0, I)      (t_d = 0: x̂0 itself)
    memory  = f_hidden(x_{t_d}, t_d)
    w       = argmax (or a draw) of p(w_i | w_<i, memory), i = 1, 2, …

With R readings (`rounding.reads`) each row is read R times, at R independent draws of z, and
keeps the words the decoder finds most probable (mean log p(w_i | w_<i, memory), END
included): the noisier t_d, the more the readings differ, and the more the decoder's own
sense of a sentence picks among them.

Any sampler (and any guidance, which acts on the latent) runs unchanged; only its last
reading of the words changes. Re-noising x̂0 to t_d puts the decoder's input where it was
trained, x_{t_d} ~ q(x_{t_d} | x0).

A masked or uniform run's decoder (`read_tokens`) reads the sampler's final row of words the
same way, noised to t_d by the run's own forward process: z_{t_d} ~ q(z_{t_d} | w).
"""

from __future__ import annotations

import torch

from difflm.diffusion import process
from difflm.model.anchors import anchor, width_groups
from difflm.model.denoiser import Denoiser
from difflm.model.tokens import TokenDenoiser


def round_in_context(
    denoiser: Denoiser,
    x0: torch.Tensor,
    *,
    t_d: float,
    generator: torch.Generator | None = None,
    allowed: torch.Tensor | None = None,
    required: torch.Tensor | None = None,
    cond: torch.Tensor | None = None,
    anchors: torch.Tensor | None = None,
    temperature: float = 0.0,
    reads: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The word ids [B, L] the denoiser's contextual decoder writes for the final x̂0 [B, L, d],
    and the decoder's mean log-probability [B] of each row's words (`ContextualDecoder.generate`).

    Args:
        denoiser: a denoiser trained with rounding.kind=contextual.
        x0: the sampler's final x̂0.
        t_d: the rounding time in [0, 1].
        generator: source of z (and of the decoder's draws at temperature > 0).
        allowed: [L, V] words each position may take (exact constraints), or None.
        required: word ids [K] every row must contain (keywords), or None.
        cond: the condition [B, P] the memory is read under (a conditioned run), or None.
        anchors: the rows' length anchors [B, L] (`model/anchors.py`), held clean in
            x_{t_d} as in training, or None.
        temperature: the decoder's word temperature (0: the most probable word).
        reads: R ≥ 1 readings of each row, at independent z; the most probable is kept.

    Raises:
        ValueError: a denoiser without a decoder, or reads < 1.
    """
    if denoiser.decoder is None:
        raise ValueError("this run has no contextual rounding decoder: train it with --set rounding.kind=contextual")
    if reads < 1:
        raise ValueError(f"reads must be ≥ 1, got {reads}")
    if reads > 1:  # row i's readings are rows i·R … i·R + R − 1
        x0 = x0.repeat_interleave(reads, 0)
        anchors = None if anchors is None else anchors.repeat_interleave(reads, 0)
        cond = None if cond is None else cond.repeat_interleave(reads, 0)
    t = torch.full((x0.shape[0],), float(t_d), device=x0.device)
    with torch.no_grad():
        x_t = x0
        if t_d > 0:
            abar = denoiser.schedule.alpha_bar(t.double()).to(x0)[:, None, None]
            z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            x_t = process.q_sample(x0, abar, z)
        # With anchors, the memory of one length at a time, each cut after its END, as in
        # training (`sampling/anchors.py`); the decoder may still write up to L positions and end
        # where its words end, unless the constraints fix the length.
        B, L = x0.shape[:2]
        groups = [(torch.arange(B, device=x0.device), L)]
        if anchors is not None:
            x_t, groups = anchor(x_t, anchors, denoiser.embedding), width_groups(anchors)
        ids = torch.empty(B, L, dtype=torch.long, device=x0.device)
        log_prob = torch.empty(B, device=x0.device)
        for group, width in groups:
            memory = denoiser.memory(x_t[group, :width], t[group], cond=None if cond is None else cond[group])
            ids[group], log_prob[group] = denoiser.decoder.generate(
                memory,
                t[group],
                length=L,
                allowed=allowed,
                required=required,
                temperature=temperature,
                generator=generator,
            )
    best = most_probable(log_prob, reads)
    return ids[best], log_prob[best]


def read_tokens(
    model: TokenDenoiser,
    tokens: torch.Tensor,
    *,
    t_d: float,
    generator: torch.Generator | None = None,
    allowed: torch.Tensor | None = None,
    required: torch.Tensor | None = None,
    cond: torch.Tensor | None = None,
    reads: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The word ids [B, L] a masked or uniform network's decoder writes for the sampler's final
    rows tokens [B, L], and their mean log-probability [B]; the arguments are those of
    `round_in_context` (the rows' fixed tokens, START and under length anchors the END and PAD
    tail, are never noised).

    Raises:
        ValueError: a network without a decoder, or reads < 1.
    """
    if model.decoder is None:
        raise ValueError("this run has no contextual rounding decoder: train it with --set rounding.discrete=true")
    if reads < 1:
        raise ValueError(f"reads must be ≥ 1, got {reads}")
    rows = tokens.repeat_interleave(reads, 0)  # row i's readings are rows i·R … i·R + R − 1
    cond = None if cond is None else cond.repeat_interleave(reads, 0)
    t = torch.full((rows.shape[0],), float(t_d), device=rows.device)
    device = generator.device if generator is not None else rows.device
    with torch.no_grad():
        u = torch.rand(rows.shape, generator=generator, device=device).to(rows.device)
        words = None
        if model.noise == "uniform":
            words = torch.randint(0, model.vocab_size, rows.shape, generator=generator, device=device).to(rows.device)
        memory = model.memory(model.noised(rows, t, u, words), t, cond=cond)
        ids, log_prob = model.decoder.generate(
            memory, t, length=rows.shape[1], allowed=allowed, required=required, generator=generator
        )
    best = most_probable(log_prob, reads)
    return ids[best], log_prob[best]


def most_probable(log_prob: torch.Tensor, k: int) -> torch.Tensor:
    """The index of the most probable row of each run of k consecutive rows of log_prob [n·k]: [n]."""
    return log_prob.view(-1, k).argmax(1) + torch.arange(0, len(log_prob), k, device=log_prob.device)
