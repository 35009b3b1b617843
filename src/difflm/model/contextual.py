"""Contextual rounding: a causal decoder p(w_i | w_<i, memory) that reads the denoiser.

Shapes: B batch, L positions, H the decoder's width, H_m the denoiser's, V vocabulary.

    memory = f_hidden(x_{t_d}, t_d)   [B, L, H_m]   the frozen denoiser's last hidden states at a
                                                    low-noise point (`Denoiser.memory`)
    m = W_m·memory + time(t_d)        [B, L, H]
    h_i = Block(tok(w_{i−1}) + pos_i, ...) then cross-attention to m   (each layer)
    p(w_i | w_<i, memory) = softmax(head(h_i))

Diffusion-LM rounds each position alone, p(w_i | x_i); its errors are local (a doubled
word, a verb dropped) because no position sees the words chosen next to it. The decoder
sees both: the latent says what the sentence is about, the prefix keeps it well formed
(CoDAR; Su's unified diffusion model allows an autoregressive q(x0 | x_t)).

Each layer is the AR baseline's block (causal self-attention and MLP, with its KV cache)
followed by a cross-attention sublayer on m, so the decoder and the causal LM share one
block definition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from difflm.config import ModelConfig, RoundingConfig
from difflm.model.autoregressive import Block, KVCache, counted_positions
from difflm.model.features import TimeMLP
from difflm.text.vocab import Vocab, without_unk


class CrossBlock(nn.Module):
    """The AR block, then pre-LN cross-attention from the positions to the memory."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.block = Block(hidden, heads, dropout)
        self.heads, self.dropout = heads, dropout
        self.ln = nn.LayerNorm(hidden)
        self.q, self.kv, self.proj = nn.Linear(hidden, hidden), nn.Linear(hidden, 2 * hidden), nn.Linear(hidden, hidden)

    def forward(
        self, h: torch.Tensor, memory: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        h, kv = self.block(h, cache)
        B, L, H = h.shape
        q = self.q(self.ln(h)).view(B, L, self.heads, H // self.heads).transpose(1, 2)
        k, v = (
            x.view(B, memory.shape[1], self.heads, H // self.heads).transpose(1, 2)
            for x in self.kv(memory).split(H, dim=-1)
        )
        drop = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return h + F.dropout(self.proj(att.transpose(1, 2).reshape(B, L, H)), drop, self.training), kv


class ContextualDecoder(nn.Module):
    """p(w_i | w_<i, memory): the contextual rounding of a denoiser.

    Args:
        rounding: the rounding section of the run config (layers, width).
        model: the denoiser's model section (its width H_m, heads, dropout).
        vocab_size: V.
        max_len: L.
    """

    def __init__(self, rounding: RoundingConfig, model: ModelConfig, vocab_size: int, max_len: int) -> None:
        super().__init__()
        h = rounding.hidden or model.hidden
        self.max_len = max_len
        self.tok = nn.Embedding(vocab_size, h)
        self.pos = nn.Parameter(torch.randn(max_len, h) * 0.02)
        self.memory_in = nn.Sequential(nn.LayerNorm(model.hidden), nn.Linear(model.hidden, h))
        self.time_mlp = TimeMLP(h, h)
        self.blocks = nn.ModuleList(CrossBlock(h, model.heads, model.dropout) for _ in range(rounding.layers))
        self.ln = nn.LayerNorm(h)
        self.head = nn.Linear(h, vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied, as in the causal LM
        nn.init.normal_(self.tok.weight, std=0.02)  # small tied logits at the start

    def read(self, memory: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """m = W_m·memory + time(t_d): [B, L, H_m], [B] -> [B, L, H]."""
        m = self.memory_in(memory)
        return m + self.time_mlp.embed(t, m.dtype)

    def forward(
        self, ids: torch.Tensor, m: torch.Tensor, cache: KVCache | None = None, start: int = 0
    ) -> tuple[torch.Tensor, KVCache]:
        """Logits [B, L, V] for ids [B, L] at positions start…start+L−1 given m (`read`), and the cache."""
        h = self.tok(ids) + self.pos[start : start + ids.shape[1]]
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, m, None if cache is None else cache[i])
            new_cache.append(kv)
        return self.head(self.ln(h)), new_cache

    def loss(self, ids: torch.Tensor, memory: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Teacher-forced −log p(w_i | w_<i, memory), averaged over the positions that count.

        The rows are cut after the batch's longest sentence: the PAD columns after it count
        for nothing, so the decoder spends no compute on them (length bucketing for free).
        """
        used = int((ids != Vocab.PAD_ID).any(0).nonzero().max()) + 1
        ids = ids[:, : min(used + 1, ids.shape[1])]
        logits, _ = self(ids[:, :-1], self.read(memory, t))
        targets = ids[:, 1:]
        nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        mask = counted_positions(targets)
        return (nll * mask).sum() / mask.sum().clamp_min(1)

    @torch.no_grad()
    def generate(
        self,
        memory: torch.Tensor,
        t: torch.Tensor,
        *,
        length: int | None = None,
        allowed: torch.Tensor | None = None,
        required: torch.Tensor | None = None,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write rows START w1 … END PAD… [B, L] left to right with a KV cache, and score them:
        the mean log-probability [B] of the words each row wrote, END included, under the
        decoder's unconstrained distribution, so that words `allowed` forces count by how well
        they fit (what `rounding.best_of` and `rounding.reads` rank by).

        Args:
            memory: the denoiser's hidden states [B, L_m, H_m] at x_{t_d}.
            t: t_d, [B].
            length: L, the positions to write (default L_m).
            allowed: words each position may take, [L, V] bool (exact constraints: known
                words, END at n + 1); None allows every word.
            required: word ids [K] every row must contain (keywords). A row that writes them
                keeps its words; a row that misses some is written again with the ones it
                wrote fixed where it wrote them, each missing word fixed at the free position
                where the first pass found it most likely, and no END before the last of them,
                so the words always appear where they fit best.
            temperature: 0 takes the most probable word; τ > 0 samples from softmax(logits/τ).
            generator: randomness of sampling (τ > 0).

        Raises:
            ValueError: a position that allows no word, more required words than free
                positions, or a negative temperature.
        """
        if temperature < 0:
            raise ValueError(f"decoding temperature must be ≥ 0, got {temperature}")
        B, L = memory.shape[0], length or memory.shape[1]
        V = self.head.weight.shape[0]
        if allowed is not None and not bool(allowed.any(-1).all()):
            raise ValueError("the constraints leave a position with no allowed word")
        allowed = (allowed if allowed is not None else torch.ones(L, V, dtype=torch.bool)).to(memory.device)
        words = allowed.clone()
        # <unk> is never a choice: `_write` bars it wherever another word is allowed (`without_unk`).
        words[..., [Vocab.START_ID, Vocab.END_ID, Vocab.PAD_ID, Vocab.UNK_ID]] = False
        rows_allowed = allowed.expand(B, L, V)
        free = (words.sum(-1) > 1).expand(B, L).clone()  # positions where the decoder chooses among words
        free[:, [0, L - 1]] = False
        required = (required if required is not None else torch.zeros(0, dtype=torch.long)).to(memory.device)
        if len(required) > int(free[0].sum()):
            raise ValueError(f"{len(required)} required words do not fit in {int(free[0].sum())} free positions")
        m = self.read(memory, t)
        ids, scores, log_prob = self._write(m, rows_allowed, required, temperature, generator)
        missing = ~(ids[:, :, None] == required[None, None, :]).any(1)  # [B, K]
        again = missing.any(1)
        if not bool(again.any()):
            return ids, log_prob
        fixed = rows_allowed[again].clone()
        for row, (r_ids, r_free, r_scores, r_missing) in enumerate(
            zip(ids[again], free[again], scores[again], missing[again])
        ):
            r_free = r_free.clone()
            # The words the first pass wrote stay where it wrote them (the rewrite would
            # otherwise be free to lose them); each missing one goes where it fits best.
            placed = [(k, int((r_ids == required[k]).nonzero()[0])) for k in (~r_missing).nonzero().flatten().tolist()]
            r_free[[position for _, position in placed]] = False
            for k in r_missing.nonzero().flatten().tolist():
                options = r_scores[:, k].masked_fill(~r_free, -torch.inf)
                position = int(options.argmax()) if bool(options.isfinite().any()) else int(r_free.nonzero()[0])
                r_free[position] = False
                placed.append((k, position))
            for k, position in placed:
                fixed[row, position] = False
                fixed[row, position, required[k]] = True
            last = max(position for _, position in placed)
            fixed[row, 1 : last + 1, Vocab.END_ID] = False  # the row goes on past its last fixed word
        ids[again], _, log_prob[again] = self._write(m[again], fixed, required, temperature, generator)
        return ids, log_prob

    def _write(
        self,
        m: torch.Tensor,
        allowed: torch.Tensor,
        watch: torch.Tensor,
        temperature: float,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One left-to-right pass: ids [B, L], the log-probability of each watched word
        [B, L, K] at every position a row wrote (−inf after its END), and the mean
        log-probability [B] of the words written."""
        B, L = allowed.shape[0], allowed.shape[1]
        ids = torch.full((B, L), Vocab.PAD_ID, dtype=torch.long, device=m.device)
        ids[:, 0] = Vocab.START_ID
        scores = torch.full((B, L, len(watch)), -torch.inf, device=m.device)
        done = torch.zeros(B, dtype=torch.bool, device=m.device)
        total = torch.zeros(B, device=m.device)
        cache = None
        for i in range(1, L):
            logits, cache = self(ids[:, i - 1 : i], m, cache, start=i - 1)
            logits = logits[:, -1].float()
            logits[:, [Vocab.START_ID, Vocab.PAD_ID]] = -torch.inf  # PAD only follows END, set below
            if i == L - 1:  # every row ends inside L
                logits[:, torch.arange(logits.shape[1], device=logits.device) != Vocab.END_ID] = -torch.inf
            # A row is scored by the decoder's own probability of its words, the constrained
            # ones included: a fixed word that does not fit where it stands counts against it.
            free_log_p = without_unk(logits).log_softmax(-1)
            logits = without_unk(logits.masked_fill(~allowed[:, i], -torch.inf))
            log_p = logits.log_softmax(-1)
            scores[:, i] = torch.where(done[:, None], -torch.inf, log_p[:, watch])
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                nxt = torch.multinomial((logits / temperature).softmax(-1), 1, generator=generator).squeeze(1)
            ids[:, i] = torch.where(done, Vocab.PAD_ID, nxt)
            total += torch.where(done, 0.0, free_log_p.gather(1, nxt[:, None]).squeeze(1))
            done |= nxt == Vocab.END_ID
            if bool(done.all()):
                break
        return ids, scores, total / (ids[:, 1:] != Vocab.PAD_ID).sum(1)
