"""The denoiser f(x_t, t): a bidirectional transformer that predicts x̂0.

Shapes: B batch, L positions, d embedding size, H hidden size, V vocabulary.

    x_t [B, L, d] ─(cat self_cond)─► in_proj ─► + pos + time ─► LN ─► encoder ─► out_proj
        x0 / eps / v:  out_proj: H → d, read as that view and converted to x̂0 by process.py
        logits:        out_proj: H → V, x̂0 = softmax(logits) · EMB   (CDCD score interpolation)

The input and output projections are Diffusion-LM's Linear–Tanh–Linear pairs. Time enters
as a sinusoidal embedding of 1000·t (1·t for MeanFlow, see MEANFLOW_TIME_SCALE) through an
MLP, added to every position.

With `condition=slots` a condition c, a multi-hot [B, P] over the run's slot=value pairs,
enters the same way as t: W_c·c (no bias) is added to the time embedding. The null
condition ∅ is c = 0, whose embedding is 0, so cond=None and the rows dropped in training
(classifier-free guidance) see the network exactly as an unconditional model would. With
`condition=source` the source's ids are a clean prefix of the sequence (`model/source.py`).

The one/few-step generators that jump along their path (shortcut, MeanFlow) also get the
jump size, embedded like t by a second MLP and added to the time embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from difflm.config import ModelConfig, RoundingConfig
from difflm.diffusion import process
from difflm.diffusion.schedules import NoiseSchedule
from difflm.model.contextual import ContextualDecoder
from difflm.model.embedding import WordEmbedding
from difflm.model.encoder import transformer_encoder
from difflm.model.features import TimeMLP
from difflm.model.source import SourcePrefix

#: Generators whose network is told the size of the jump it serves (`model.generator`).
JUMP_GENERATORS = ("shortcut", "meanflow")

#: The sinusoidal features are of scale·t; DDPM's scale 1000 suits a network that is only
#: evaluated. MeanFlow differentiates the network in t (the JVP of its identity), and features
#: that turn 1000× faster make du/dt, hence its targets, mostly noise (docs/benchmarks.md).
MEANFLOW_TIME_SCALE = 1.0


@dataclass
class Prediction:
    """What the denoiser says about x0.

    Attributes:
        x0: x̂0, [B, L, d].
        logits: word logits at every position, [B, L, V].
    """

    x0: torch.Tensor
    logits: torch.Tensor

    def halves(self) -> tuple[Prediction, Prediction]:
        """The first and second half of the batch: the two branches of one guided call of 2B rows."""
        (x0_a, x0_b), (logits_a, logits_b) = self.x0.chunk(2), self.logits.chunk(2)
        return Prediction(x0=x0_a, logits=logits_a), Prediction(x0=x0_b, logits=logits_b)


class Denoiser(nn.Module):
    """f(x_t, t, *, cond=None, self_cond=None, jump=None) -> Prediction.

    Args:
        config: the model section of the run config.
        vocab_size: V.
        max_len: L, the number of learned position embeddings.
        schedule: the noise schedule, needed to read ε- or v-outputs as x̂0.
        num_conditions: P, the size of the condition's multi-hot (config.condition=slots), or
            S, the positions of a source row (config.condition=source, `model/source.py`).
        rounding: with kind=contextual, the denoiser carries its contextual rounding decoder
            (`self.decoder`, trained and saved with it); else `self.decoder` is None.
        length_anchors: the denoiser reads each row's length from its clean END and PAD tail
            (`model/anchors.py`) and carries the training sentences' word counts
            (`self.lengths`, [L − 1], saved with it) to draw lengths from; else
            `self.lengths` is None.
        sweep_lag: λ of the left-to-right noise it was trained with (`diffusion/sweep.py`),
            which its sampler must follow; 0 = trained on shared times only.

    Raises:
        ValueError: a conditioned config without conditions, or conditions without one.
    """

    def __init__(
        self,
        config: ModelConfig,
        vocab_size: int,
        max_len: int,
        schedule: NoiseSchedule,
        num_conditions: int = 0,
        rounding: RoundingConfig | None = None,
        length_anchors: bool = False,
        sweep_lag: float = 0.0,
    ) -> None:
        super().__init__()
        if (config.condition != "none") != (num_conditions > 0):
            raise ValueError(f"model.condition={config.condition} does not fit {num_conditions} condition labels")
        self.config = config
        self.schedule = schedule
        self.max_len = max_len
        self.self_conditioning = config.self_condition
        self.sweep_lag = sweep_lag
        d, h = config.embed_dim, config.hidden
        self.embedding = WordEmbedding(vocab_size, d, normalize=config.normalize_embeddings)
        in_dim = 2 * d if config.self_condition else d
        self.in_proj = nn.Sequential(nn.Linear(in_dim, h), nn.Tanh(), nn.Linear(h, h))
        # Rich input embeddings read through the context-free word posterior (see `forward`).
        self.word_in = nn.Parameter(torch.randn(vocab_size, h) * 0.02) if config.posterior_input else None
        self.pos = nn.Parameter(torch.randn(max_len, h) * 0.02)
        self.time_mlp = TimeMLP(h, 4 * h)
        self.time_scale = MEANFLOW_TIME_SCALE if config.generator == "meanflow" else 1000.0
        self.num_conditions = num_conditions
        # Only conditioned models have them, so unconditioned checkpoints load unchanged.
        self.cond_proj = nn.Linear(num_conditions, h, bias=False) if config.condition == "slots" else None
        self.source = SourcePrefix(num_conditions, h, in_dim=d) if config.condition == "source" else None
        # Only the jumping generators have it: diffusion models keep their parameters and checkpoints.
        self.jump_mlp = TimeMLP(h, 4 * h) if config.generator in JUMP_GENERATORS else None
        self.in_norm = nn.LayerNorm(h)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = transformer_encoder(h, config.heads, config.layers, config.dropout)
        self.out_norm = nn.LayerNorm(h)
        out_dim = vocab_size if config.predict == "logits" else d
        self.out_proj = nn.Sequential(nn.Linear(h, h), nn.Tanh(), nn.Linear(h, out_dim))
        # Only runs with contextual rounding have it, so other checkpoints load unchanged.
        self.decoder = (
            ContextualDecoder(rounding, config, vocab_size, max_len)
            if rounding is not None and rounding.kind == "contextual"
            else None
        )
        self.lengths: torch.Tensor | None
        self.register_buffer("lengths", torch.zeros(max_len - 1) if length_anchors else None)

    def word_posterior_logits(self, x_t: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        """log q(w | x_t) + const for each position alone, words uniform a priori: [B, L, V].

        q(x_t | w) = N(√ᾱ·EMB(w), (1 − ᾱ) I), so log q(w | x_t) = (√ᾱ·x_t·e_w − ᾱ‖e_w‖²/2) / (1 − ᾱ) + const.
        """
        return self.embedding.gaussian_scores(x_t, abar.sqrt()) / (1 - abar)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        *,
        cond: torch.Tensor | None = None,
        self_cond: torch.Tensor | None = None,
        jump: torch.Tensor | None = None,
    ) -> Prediction:
        """Predict x0 from x_t [B, L, d] at times t [B] in [0, 1], given the condition cond [B, P]
        (or the source ids [B, S]; None: ∅).

        t may also be [B, L], a time per position (left-to-right noise, `diffusion/sweep.py`).

        `jump` [B] in [0, 1] is the length, in path time, of the jump the prediction
        serves (the shortcut's d, MeanFlow's t − r); None means 0, the instantaneous
        x̂0 of flow matching, which is what DDPM and DDIM ask of any model.
        """
        h = self.hidden(x_t, t, cond=cond, self_cond=self_cond, jump=jump)
        out = self.out_proj(self.out_norm(h)).float()
        if self.config.predict == "logits":
            return self.from_logits(out)
        x0 = process.to_x0(self.config.predict, out, x_t, self._alpha_bar(t, x_t))
        return Prediction(x0=x0, logits=self.embedding.logits(x0))

    def hidden(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        *,
        cond: torch.Tensor | None = None,
        self_cond: torch.Tensor | None = None,
        jump: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The encoder's last hidden states [B, L, H] at x_t (what the output head and a
        contextual rounding decoder read); the arguments are those of `forward`."""
        if jump is not None and self.jump_mlp is None:
            raise ValueError(
                "this model was trained without a jump size (model.generator=shortcut or meanflow has one)"
            )
        B, L, _ = x_t.shape
        if cond is not None and self.cond_proj is None and self.source is None:
            raise ValueError("this model was trained without a conditioning signal (cond)")
        if cond is not None and tuple(cond.shape) != (B, self.num_conditions):
            raise ValueError(
                f"cond must have shape [{B}, {self.num_conditions}] (a multi-hot or source row per row), "
                f"got {list(cond.shape)}"
            )
        if L > self.max_len:
            raise ValueError(f"sequence length {L} exceeds the model's maximum {self.max_len}")
        if t.ndim == 2 and tuple(t.shape) != (B, L):
            raise ValueError(f"a time per position must be [B, L] = {[B, L]}, got {list(t.shape)}")
        if self.self_conditioning:
            self_cond = torch.zeros_like(x_t) if self_cond is None else self_cond
            inputs = torch.cat([x_t, self_cond], dim=-1)
        else:
            inputs = x_t
        h = self.in_proj(inputs) + self.pos[:L]
        if self.word_in is not None:
            # What x_t alone says about each word, as in Bayesian flow networks' inputs: the
            # network starts from an H-dimensional word vector (exact at low noise, a
            # mixture at high noise) instead of decoding a noisy d-vector itself.
            h = h + self.word_posterior_logits(x_t, self._alpha_bar(t, x_t)).softmax(-1) @ self.word_in
        time = self.time_mlp.embed(t, h.dtype, self.time_scale)  # [B, 1, H], or [B, L, H] with a time per position
        if cond is not None and self.cond_proj is not None:
            time = time + self.cond_proj(cond.to(h.dtype))[:, None, :]
        if self.jump_mlp is not None:
            jump = torch.zeros(B, device=x_t.device) if jump is None else jump
            time = time + self.jump_mlp.embed(jump, h.dtype, self.time_scale)
        states = self.in_norm(h + time)
        if self.source is None:
            return self.encoder(self.dropout(states))
        source = self.embedding(self.source.ids(cond, B, x_t.device)).to(h.dtype)
        prefix = self.in_norm(self.source(source) + time)  # the clean source, at the target's time
        return self.encoder(self.dropout(torch.cat([prefix, states], 1)))[:, prefix.shape[1] :]

    def _alpha_bar(self, t: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """ᾱ(t) shaped to scale x_t: [B, 1, 1] for t [B], [B, L, 1] for t [B, L]."""
        abar = self.schedule.alpha_bar(t).to(x_t)
        return abar[:, None, None] if abar.ndim == 1 else abar[..., None]

    def memory(self, x_t: torch.Tensor, t: torch.Tensor, *, cond: torch.Tensor | None = None) -> torch.Tensor:
        """What contextual rounding reads at x_t: the hidden states [B, L, H], self-conditioned on
        the network's own first reading of x_t when it was trained with self-conditioning."""
        draft = self(x_t, t, cond=cond).x0 if self.self_conditioning else None
        return self.hidden(x_t, t, cond=cond, self_cond=draft)

    def from_logits(self, logits: torch.Tensor) -> Prediction:
        """The prediction of word logits [B, L, V]: x̂0 = softmax(logits)·EMB (predict=logits)."""
        return Prediction(x0=logits.softmax(-1) @ self.embedding.table(), logits=logits)
