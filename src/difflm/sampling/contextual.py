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

A masked or uniform run's decoder reads the sampler's final row of words the same way, noised
to t_d by the run's own forward process: z_{t_d} ~ q(z_{t_d} | w).
"""

from __future__ import annotations

import torch

from difflm.diffusion import process
from difflm.model.anchors import anchor, width_groups
from difflm.model.contextual import ContextualDecoder
from difflm.model.denoiser import Denoiser
from difflm.model.tokens import TokenDenoiser


def round_in_context(
    network: Denoiser | TokenDenoiser,
    last: torch.Tensor,
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
    """The word ids [B, L] the network's contextual decoder writes for the sampler's last state,
    and the decoder's mean log-probability [B] of each row's words (`ContextualDecoder.generate`).

    Args:
        network: a denoiser trained with rounding.kind=contextual, or a masked or uniform
            network trained with rounding.discrete.
        last: the denoiser's final x̂0 [B, L, d], or the token network's final rows [B, L] (their
            fixed tokens, START and under length anchors the END and PAD tail, never noised).
        t_d: the rounding time in [0, 1].
        generator: source of the noise (and of the decoder's draws at temperature > 0).
        allowed: [L, V] words each position may take (exact constraints), or None.
        required: word ids [K] every row must contain (keywords), or None.
        cond: the condition [B, P] the memory is read under (a conditioned run), or None.
        anchors: the rows' length anchors [B, L] (`model/anchors.py`) of a denoiser's x̂0, held
            clean in x_{t_d} as in training, or None.
        temperature: the decoder's word temperature (0: the most probable word).
        reads: R ≥ 1 readings of each row, at independent noise; the most probable is kept.

    Raises:
        ValueError: a network without a decoder, or reads < 1.
    """
    decoder = require_decoder(network)
    if reads < 1:
        raise ValueError(f"reads must be ≥ 1, got {reads}")
    if reads > 1:  # row i's readings are rows i·R … i·R + R − 1
        last = last.repeat_interleave(reads, 0)
        anchors = None if anchors is None else anchors.repeat_interleave(reads, 0)
        cond = None if cond is None else cond.repeat_interleave(reads, 0)
    B, L = last.shape[:2]
    t = torch.full((B,), float(t_d), device=last.device)
    with torch.no_grad():
        noised = _at_t_d(network, last, t, generator)
        # With anchors, the memory of one length at a time, each cut after its END, as in
        # training (`sampling/anchors.py`); the decoder may still write up to L positions and end
        # where its words end, unless the constraints fix the length.
        groups = [(torch.arange(B, device=last.device), L)]
        if anchors is not None:
            assert isinstance(network, Denoiser)
            noised, groups = anchor(noised, anchors, network.embedding), width_groups(anchors)
        ids = torch.empty(B, L, dtype=torch.long, device=last.device)
        log_prob = torch.empty(B, device=last.device)
        for group, width in groups:
            memory = network.memory(noised[group, :width], t[group], cond=None if cond is None else cond[group])
            ids[group], log_prob[group] = decoder.generate(
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


def require_decoder(network: Denoiser | TokenDenoiser) -> ContextualDecoder:
    """The network's contextual decoder; ValueError, naming the settings to train one with, if it has none."""
    if network.decoder is None:
        hint = "rounding.kind=contextual" + (" rounding.discrete=true" if isinstance(network, TokenDenoiser) else "")
        raise ValueError(f"this run has no contextual rounding decoder: train it with --set {hint}")
    return network.decoder


def _at_t_d(
    network: Denoiser | TokenDenoiser, last: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """The last state noised to t_d by the network's forward process: x_{t_d} of x̂0 (x̂0 itself
    at t_d = 0), or z_{t_d} of the rows (masking or substitution)."""
    if isinstance(network, TokenDenoiser):
        device = generator.device if generator is not None else last.device
        u = torch.rand(last.shape, generator=generator, device=device).to(last.device)
        words = None
        if network.noise == "uniform":
            words = torch.randint(0, network.vocab_size, last.shape, generator=generator, device=device)
            words = words.to(last.device)
        return network.noised(last, t, u, words)
    if not bool((t > 0).any()):
        return last
    abar = network.schedule.alpha_bar(t.double()).to(last)[:, None, None]
    z = torch.randn(last.shape, generator=generator, device=last.device, dtype=last.dtype)
    return process.q_sample(last, abar, z)


def most_probable(log_prob: torch.Tensor, k: int) -> torch.Tensor:
    """The index of the most probable row of each run of k consecutive rows of log_prob [n·k]: [n]."""
    return log_prob.view(-1, k).argmax(1) + torch.arange(0, len(log_prob), k, device=log_prob.device)
