"""A causal transformer LM: the fluency teacher (lm-score) and the autoregressive baseline.

Shapes: B batch, L positions, H hidden, V vocabulary. A row is START w1 … wn END PAD…;
the model predicts ids[:, 1:] from ids[:, :-1], and PAD after the first END is ignored
(the sentence ends there). Sampling keeps a key/value cache per layer, so each new
token costs one position's worth of attention instead of a full forward pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from difflm.config import ModelConfig
from difflm.model.source import SourcePrefix
from difflm.text.vocab import Vocab, without_unk

KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [B, heads, t, H/heads]


class Block(nn.Module):
    """Pre-LN transformer block with causal self-attention (nanoGPT style)."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.dropout = dropout

    def forward(self, h: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None):
        B, L, H = h.shape
        q, k, v = self.qkv(self.ln1(h)).split(H, dim=-1)
        q, k, v = (x.view(B, L, self.heads, H // self.heads).transpose(1, 2) for x in (q, k, v))
        if cache is not None:  # new positions attend to all cached ones: no mask needed for L == 1
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        drop = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None, dropout_p=drop)
        h = h + F.dropout(self.proj(att.transpose(1, 2).reshape(B, L, H)), drop, self.training)
        h = h + F.dropout(self.mlp(self.ln2(h)), drop, self.training)
        return h, (k, v)


def counted_positions(targets: torch.Tensor) -> torch.Tensor:
    """The next-token targets [B, L−1] that count: up to and including the first END, never PAD."""
    ended_before = (targets == Vocab.END_ID).long().cumsum(1) - (targets == Vocab.END_ID).long()
    return (ended_before == 0) & (targets != Vocab.PAD_ID)


class CausalLM(nn.Module):
    """p(w_i | w_<i) with learned positions; sized by the same ModelConfig as the denoiser.

    A conditioned LM (`model.condition=slots`: Diffusion-LM's FT baseline, a fine-tuned
    conditional AR model) adds a projection of c [B, P], the multi-hot of each row's slot
    values, at every position; c = 0 (None) is the null condition, as for the denoiser.
    """

    def __init__(self, config: ModelConfig, vocab_size: int, max_len: int, num_conditions: int = 0) -> None:
        super().__init__()
        if (config.condition != "none") != (num_conditions > 0):
            raise ValueError(f"model.condition={config.condition} does not fit {num_conditions} condition labels")
        self.config, self.max_len = config, max_len
        h = config.hidden
        self.tok = nn.Embedding(vocab_size, h)
        self.pos = nn.Parameter(torch.randn(max_len, h) * 0.02)
        self.blocks = nn.ModuleList(Block(h, config.heads, config.dropout) for _ in range(config.layers))
        self.ln = nn.LayerNorm(h)
        self.head = nn.Linear(h, vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied input/output embeddings
        self.cond_proj = nn.Linear(num_conditions, h, bias=False) if config.condition == "slots" else None
        self.source = SourcePrefix(num_conditions, h) if config.condition == "source" else None

    def forward(
        self, ids: torch.Tensor, cache: KVCache | None = None, start: int = 0, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, KVCache]:
        """Logits [B, L, V] for ids [B, L] at positions start…start+L−1, given the condition
        cond [B, P] (None: ∅), and the updated cache. A source-conditioned LM reads the source
        ids cond [B, S] as a prefix (`model/source.py`) in the call that starts the cache; the
        cache then holds it."""
        if cond is not None and self.cond_proj is None and self.source is None:
            raise ValueError("this LM was trained without a conditioning signal (cond)")
        h = self.tok(ids) + self.pos[start : start + ids.shape[1]]
        if cond is not None and self.cond_proj is not None:
            h = h + self.cond_proj(cond.to(h.dtype))[:, None, :]
        prefix = 0
        if self.source is not None and cache is None:
            source = self.source(self.tok(self.source.ids(cond, len(ids), ids.device)))
            h, prefix = torch.cat([source, h], 1), source.shape[1]
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, None if cache is None else cache[i])
            new_cache.append(kv)
        return self.head(self.ln(h[:, prefix:])), new_cache

    def token_nll(self, ids: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position NLL of ids[:, 1:] [B, L−1] and the mask of positions that count.

        A position counts up to and including the first END: the teacher scores
        `START text END`, as Diffusion-LM's lm-score does with GPT-2's bos/eos.
        """
        logits, _ = self(ids[:, :-1], cond=cond)
        targets = ids[:, 1:]
        return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none"), counted_positions(targets)

    def loss(self, ids: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy over the counted positions."""
        nll, mask = self.token_nll(ids, cond)
        return (nll * mask).sum() / mask.sum().clamp_min(1)

    @torch.no_grad()
    def generate(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_len: int | None = None,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sample n rows START w1 … END PAD… [n, max_len] with a KV cache (nucleus if top_p < 1),
        given the condition cond [P] or [n, P] (None: ∅), never writing <unk> (`without_unk`)."""
        if not 0 < top_p <= 1 or temperature <= 0:
            raise ValueError(f"need 0 < top_p ≤ 1 and temperature > 0, got top_p={top_p}, temperature={temperature}")
        max_len = max_len or self.max_len
        device = self.pos.device
        if cond is not None:
            cond = cond.expand(n, -1)
        ids = torch.full((n, max_len), Vocab.PAD_ID, dtype=torch.long, device=device)
        ids[:, 0] = Vocab.START_ID
        done = torch.zeros(n, dtype=torch.bool, device=device)
        cache = None
        for i in range(1, max_len):
            logits, cache = self(ids[:, i - 1 : i], cache, start=i - 1, cond=cond)
            probs = (without_unk(logits[:, -1].float()) / temperature).softmax(-1)
            if top_p < 1:
                probs = _nucleus(probs, top_p)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            if i == max_len - 1:
                nxt = torch.full_like(nxt, Vocab.END_ID)  # every row ends inside L
            ids[:, i] = torch.where(done, Vocab.PAD_ID, nxt)
            done |= nxt == Vocab.END_ID
            if bool(done.all()):
                break
        return ids


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of words whose probability reaches top_p; renormalise."""
    sorted_p, order = probs.sort(-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p
    filtered = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
    return filtered / filtered.sum(-1, keepdim=True)


def sentence_nll(model: CausalLM, ids: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Mean token NLL of each row of ids [N, L], scored as START text END: [N]."""
    was_training = model.training
    model.eval()
    per_sentence = []
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            nll, mask = model.token_nll(ids[start : start + batch_size].to(model.pos.device))
            per_sentence.append((nll * mask).sum(1) / mask.sum(1).clamp_min(1))
    model.train(was_training)
    if not per_sentence:
        raise ValueError("no sentences to score")
    return torch.cat(per_sentence).cpu()


def perplexity(model: CausalLM, ids: torch.Tensor, batch_size: int = 256) -> float:
    """lm-score of rows ids [N, L]: exp of the per-sentence mean token NLL, averaged.

    This is Diffusion-LM's protocol (each sentence scored as START text END, mean NLL
    per sentence, averaged over sentences, then exponentiated).
    """
    return math.exp(float(sentence_nll(model, ids, batch_size).mean()))
