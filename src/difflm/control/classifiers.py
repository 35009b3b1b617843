"""Classifiers on noisy latents p(c | x_t): the "c" of Diffusion-LM's controllable generation (§5).

Notation (Diffusion-LM, Li et al. 2022, §5.1):

    x_t      a noisy latent sentence, [B, L, d]; row position p holds token p−1 (position 0 is START)
    t        its time in [0, 1] (t = 0 is clean), given as a float or a tensor [B]
    h        the encoder's states, [B, L, H]
    c        a control target: slot=value pairs, a POS sequence, a tree, or one span

A classifier is a small bidirectional transformer over x_t: an up-projection d → H (the
Linear–Tanh–Linear of the denoiser), learned positions, the time embedding added at every
position, and one head per task:

    attribute   per-position scores of each (slot, value) pair, pooled by log-mean-exp over positions
                -> one logit per pair;  log p(slot=value | x_t) = logsigmoid(logit)
    words       the same over the vocabulary's words: log p(word w appears | x_t)
    pos         h_p -> UPOS tag of position p (START, END and PAD positions take SPECIAL_TAG)
    tree        concat[h_i; h_{j−1}] -> MLP -> label of the chart cell (i, j), i < j: the positions
                i..j−1, or NO_SPAN; a unary chain (ROOT over S) is one label "ROOT::S"

Every classifier gives `log_prob(x, t, target) -> [B]`, differentiable in x, which gradient
guidance ascends.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from difflm import checkpoint
from difflm.model.encoder import transformer_encoder
from difflm.model.features import TimeMLP
from difflm.text.grammar import UPOS_TAGS
from difflm.text.grammar.tree import Tree
from difflm.text.slots import SlotLabels, multi_hot

TASKS = ("attribute", "pos", "tree", "words")
SPECIAL_TAG = "<special>"  # the POS class of START, END and PAD positions
NO_SPAN = "<none>"  # the chart label of a cell that is not a constituent
CHAIN_SEP = "::"  # joins the labels of a unary chain over one span, outermost first
IGNORE = -100  # target id of a position or cell that is not scored
_FORMAT = "difflm.classifier"
_VERSION = 1


@dataclass(frozen=True)
class ClassifierConfig:
    """A classifier's shape and label set (saved as config.json).

    Attributes:
        task: one of TASKS.
        embed_dim: d, the diffusion model's embedding size (of a discrete run: the
            classifier's own token embedding).
        max_len: L, the diffusion model's row length.
        labels: class names: POS tags, chart labels (NO_SPAN first) or "slot=value" pairs.
        hidden: H, the transformer width.
        layers: transformer blocks.
        heads: attention heads.
        dropout: dropout inside the transformer.
        vocab_size: V, the run's vocabulary, for a POS classifier's word-tag counts (0: a
            classifier saved before it kept them).
        tokens: the token ids a classifier of a discrete run reads (V + 1: the words and the
            mask), through its own embedding; 0: it reads a continuous run's noisy latents.
        prefixes: a future discriminator of an autoregressive run (FUDGE): it reads clean
            prefixes, every position after the prefix masked, and predicts the whole
            sentence's label; it takes no time (t is ignored).
    """

    task: str
    embed_dim: int
    max_len: int
    labels: tuple[str, ...]
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    vocab_size: int = 0
    tokens: int = 0
    prefixes: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.prefixes and not self.tokens:
            raise ValueError("a prefix classifier reads token ids: it needs tokens > 0")
        if self.task not in TASKS:
            raise ValueError(f"unknown classifier task {self.task!r}; valid tasks: {', '.join(TASKS)}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if len(set(self.labels)) != len(self.labels) or not self.labels:
            raise ValueError(f"{self.task} classifier labels must be non-empty and distinct")


class LatentEncoder(nn.Module):
    """x_t [B, L, d], t [B] -> h [B, L, H]."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        d, h = config.embed_dim, config.hidden
        self.up = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, h))
        self.pos = nn.Parameter(torch.randn(config.max_len, h) * 0.02)
        self.time_mlp = TimeMLP(h, 4 * h)
        self.in_norm = nn.LayerNorm(h)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = transformer_encoder(h, config.heads, config.layers, config.dropout)
        self.out_norm = nn.LayerNorm(h)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.up(x) + self.pos[: x.shape[1]]
        h = h + self.time_mlp.embed(t, h.dtype)
        return self.out_norm(self.encoder(self.dropout(self.in_norm(h))))


class LatentClassifier(nn.Module):
    """Base of the task classifiers (`PooledLabels`, `ItemLabels`): the encoder, input checks, save and load.

    A subclass defines `log_prob` (what guidance ascends), `loss` (what training descends),
    and `gold_items` / `predicted_items`, the scored decisions behind its accuracy.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = LatentEncoder(config)
        self.tokens = nn.Embedding(config.tokens, config.embed_dim) if config.tokens else None

    @property
    def labels(self) -> tuple[str, ...]:
        return self.config.labels

    def features(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """h = encoder(x_t, t): x [B, L, d] with L ≤ max_len -> [B, L, H]. A classifier of a
        discrete run reads token ids z [B, L], or one-hot rows [B, L, tokens] (differentiable:
        discrete guidance takes the gradient with respect to them); a prefix classifier reads
        token ids whose future is masked, and no time."""
        if self.tokens is not None:
            if x.is_floating_point() and x.shape[-1] != self.config.tokens:
                raise ValueError(f"one-hot rows must be [B, L, {self.config.tokens}], got {list(x.shape)}")
            x = x.to(self.tokens.weight.dtype) @ self.tokens.weight if x.is_floating_point() else self.tokens(x)
        if x.ndim != 3 or x.shape[-1] != self.config.embed_dim or x.shape[1] > self.config.max_len:
            raise ValueError(
                f"x must be [B, L ≤ {self.config.max_len}, {self.config.embed_dim}] for this classifier, "
                f"got {list(x.shape)}"
            )
        t = torch.as_tensor(0.0 if self.config.prefixes else t, dtype=torch.float32, device=x.device)
        if bool(((t < 0) | (t > 1)).any()):
            raise ValueError(f"t must lie in [0, 1], got {t.tolist()}")
        return self.encoder(x, t.expand(x.shape[0]) if t.ndim == 0 else t)

    def log_prob(self, x: torch.Tensor, t: torch.Tensor | float, target: torch.Tensor) -> torch.Tensor:
        """log p(target | x_t), [B]."""
        raise NotImplementedError

    def loss(self, x: torch.Tensor, t: torch.Tensor | float, target: torch.Tensor) -> torch.Tensor:
        """The training loss, a scalar."""
        raise NotImplementedError

    @torch.no_grad()
    def init_prior(self, target: torch.Tensor) -> None:
        """Start the output bias at the log class frequencies of a target batch.

        Most tags, chart labels and pairs are rare; from a uniform start the first steps only
        learn that, and the features then sit on a long plateau before they learn the input.
        """
        counts = torch.bincount(target[target != IGNORE].flatten(), minlength=len(self.labels)) + 1  # +1: no log 0
        self.output_bias().copy_((counts / counts.sum()).log())

    def output_bias(self) -> torch.Tensor:
        """The bias of the last layer (one entry per label)."""
        raise NotImplementedError

    def gold_items(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The scored decisions of a target batch: (gold class [N], group [N]).

        A group is a set of classes that compete (a slot's values); the majority baseline
        predicts each group's most frequent class.
        """
        raise NotImplementedError

    def predicted_items(self, x: torch.Tensor, t: torch.Tensor | float, target: torch.Tensor) -> torch.Tensor:
        """The predicted class of each item of `gold_items(target)`, [N]."""
        raise NotImplementedError

    def save(self, directory: str | Path, extra: Mapping | None = None) -> Path:
        """Write model.safetensors and config.json (last: it marks the directory complete)."""
        directory = Path(directory)
        checkpoint.save_weights(directory / "model.safetensors", self)
        meta = {"format": _FORMAT, "version": _VERSION, "config": dataclasses.asdict(self.config), **(extra or {})}
        checkpoint.atomic_write_text(directory / "config.json", json.dumps(meta, indent=2, ensure_ascii=False))
        return directory

    @staticmethod
    def load(directory: str | Path) -> LatentClassifier:
        """Read a classifier saved by `save`, in eval mode; ValueError names a missing or corrupt file."""
        directory = Path(directory)
        meta = checkpoint.read_json(directory / "config.json")
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            raise ValueError(
                f"{directory / 'config.json'} is not a difflm classifier config (format {_FORMAT!r} v{_VERSION})"
            )
        try:
            config = ClassifierConfig(**meta["config"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"corrupt classifier config in {directory / 'config.json'}: {err}") from None
        model = CLASSES[config.task](config)
        checkpoint.load_weights(model, directory / "model.safetensors")
        return model.eval()


class PooledLabels(LatentClassifier):
    """Base of the multi-label classifiers: log p(label k | x_t) = logsigmoid(logit_k), with

        logit_k = b_k + log mean_p exp(w_k · h_p)

    a soft "some position expresses label k". A label is said by a few words of a row that is
    mostly PAD; pooling h first (a mean, or one attention query per label) learned several
    times slower in our runs. Targets are multi-hot float tensors [B, P] over `labels`.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__(config)
        P, H = len(config.labels), config.hidden
        self.weights = nn.Parameter(torch.randn(P, H) * H**-0.5)
        self.bias = nn.Parameter(torch.zeros(P))

    def logits(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """One logit per label, [B, P]."""
        scores = self.features(x, t) @ self.weights.t()  # [B, L, P]
        return scores.logsumexp(1) - math.log(x.shape[1]) + self.bias

    def log_prob(self, x: torch.Tensor, t: torch.Tensor | float, target: torch.Tensor) -> torch.Tensor:
        """Σ over the target's labels of log p(label | x_t), [B]."""
        logits = self.logits(x, t)
        return (F.logsigmoid(logits) * target.to(logits.dtype)).sum(-1)

    @torch.no_grad()
    def init_prior(self, target: torch.Tensor) -> None:
        """Start each label's logit at the log-odds of its frequency in a target batch."""
        share = (target.sum(0) + 1) / (len(target) + 2)  # Laplace: no label is certain
        self.bias.copy_(share.log() - (-share).log1p())

    def loss(self, x: torch.Tensor, t: torch.Tensor | float, target: torch.Tensor) -> torch.Tensor:
        # Absent labels are negatives: the classifier must tell "food=French" from "food=Italian".
        logits = self.logits(x, t)
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))


class AttributeClassifier(PooledLabels):
    """Multi-label slot=value classifier (`PooledLabels` over "slot=value" pairs)."""

    slot_of: torch.Tensor  # a buffer (register_buffer in __init__)

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__(config)
        slots = [label.split("=", 1)[0] for label in config.labels]
        self.slot_names = tuple(dict.fromkeys(slots))
        # The slot of each pair, so a slot's values can be compared with one another.
        self.register_buffer("slot_of", torch.tensor([self.slot_names.index(s) for s in slots]), persistent=False)

    def values(self) -> dict[str, list[str]]:
        """Slot -> its values, as known to this classifier."""
        return SlotLabels(self.labels).values()

    def target(self, slot_maps: Sequence[Mapping[str, str]]) -> torch.Tensor:
        """Multi-hot [B, P] of the pairs each mapping holds; ValueError names an unknown pair."""
        return multi_hot(slot_maps, self.labels, owner="this attribute classifier")

    def gold_items(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gold = target.nonzero()[:, 1]
        return gold, self.slot_of[gold]

    def predicted_items(self, x: torch.Tensor, t: torch.Tensor | float, target: torch.Tensor) -> torch.Tensor:
        """For each gold pair, the most likely value of its slot (as a pair index)."""
        rows, gold = target.nonzero().unbind(1)
        logits = self.logits(x, t)[rows]  # [N, P]
        same_slot = self.slot_of[None, :] == self.slot_of[gold][:, None]
        return logits.masked_fill(~same_slot, float("-inf")).argmax(-1)


class WordsClassifier(PooledLabels):
    """Which words the sentence contains (`PooledLabels` over its training sentences' words):
    the future discriminator of FUDGE's keywords, log p(every keyword appears | prefix)."""

    def target(self, word_sets: Sequence[Sequence[str]]) -> torch.Tensor:
        """Multi-hot [B, P] of each row's words; ValueError names the words this classifier does not know."""
        index = {word: k for k, word in enumerate(self.labels)}
        unknown = sorted({w for words in word_sets for w in words if w not in index})
        if unknown:
            raise ValueError(f"unknown word(s) for this words classifier: {', '.join(unknown)}")
        out = torch.zeros(len(word_sets), len(self.labels))
        for row, words in enumerate(word_sets):
            out[row, [index[w] for w in words]] = 1.0
        return out

    def gold_items(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gold = target.nonzero()[:, 1]
        return gold, torch.zeros_like(gold)

    def predicted_items(self, x: torch.Tensor, t: torch.Tensor | float, target: torch.Tensor) -> torch.Tensor:
        """Each gold word if it is among the row's |gold| highest-scored words, else −1 (R-precision)."""
        rows, gold = target.nonzero().unbind(1)
        logits = self.logits(x, t)
        rank = (logits[rows] > logits[rows, gold][:, None]).sum(-1)  # words scored above the gold one
        return torch.where(rank < target.sum(-1)[rows], gold, -1)


#: (label logits [B, M, C], label ids [B, M]) of the M items a target scores.
ItemLogits = tuple[torch.Tensor, torch.Tensor]


class ItemLabels(LatentClassifier):
    """Base of the classifiers that give each item (a position, a chart cell) one of C labels: a
    target holds a label id per item (IGNORE = not scored); accuracy skips the `trivial` label's items."""

    trivial: str

    def item_logits(self, x: torch.Tensor, t: torch.Tensor | float, target: torch.Tensor) -> ItemLogits:
        """The logits and label ids of the items the target scores (`ItemLogits`)."""
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, t: torch.Tensor | float, target: torch.Tensor) -> torch.Tensor:
        """Σ over the scored items of log p(the item's label | x_t), [B]."""
        logits, gold = self.item_logits(x, t, target)
        picked = logits.log_softmax(-1).gather(-1, gold.clamp_min(0)[..., None])[..., 0]
        return (picked * (gold != IGNORE)).sum(-1)

    def loss(self, x: torch.Tensor, t: torch.Tensor | float, target: torch.Tensor) -> torch.Tensor:
        logits, gold = self.item_logits(x, t, target)
        return F.cross_entropy(logits.transpose(1, 2), gold, ignore_index=IGNORE)

    def gold_items(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gold = target[self._counted(target)]
        return gold, torch.zeros_like(gold)

    def _counted(self, target: torch.Tensor) -> torch.Tensor:
        """The items accuracy counts: the scored ones not labelled `trivial`."""
        return (target != IGNORE) & (target != self.labels.index(self.trivial))


class PosClassifier(ItemLabels):
    """Per-position UPOS tagger; targets are tag ids [B, L] (IGNORE = not scored).

    It also keeps how often each word of the training sentences carried each tag
    (`word_tags`, [V, C]), so that a POS constraint can hold the contextual decoder to words
    that take the target tag: the latent classifier steers what the sentence says, the
    lexicon keeps the written word in its class.
    """

    word_tags: torch.Tensor | None  # a buffer when config.vocab_size > 0
    trivial = SPECIAL_TAG  # accuracy counts word positions only: the special ones are trivial

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__(config)
        self.head = nn.Linear(config.hidden, len(config.labels))
        counts = torch.zeros(config.vocab_size, len(config.labels)) if config.vocab_size else None
        self.register_buffer("word_tags", counts)

    @torch.no_grad()
    def count_words(self, ids: torch.Tensor, target: torch.Tensor) -> None:
        """Set `word_tags` from word ids [N, L] and their tag ids [N, L] (the scored word positions)."""
        if self.word_tags is None:
            raise ValueError("this POS classifier was built without a vocabulary size: it keeps no word-tag counts")
        words = self._counted(target)
        pairs = ids[words].to(self.word_tags.device) * len(self.labels) + target[words].to(self.word_tags.device)
        counts = torch.bincount(pairs, minlength=self.word_tags.numel()).view_as(self.word_tags)
        self.word_tags.copy_(counts)

    def words_taking(self, tags: Sequence[str], min_share: float = 0.1) -> torch.Tensor | None:
        """[n, V] bool: the words that carried tag k in at least `min_share` of their training
        occurrences, for each tag; a tag no word carried allows every word. None without counts."""
        if self.word_tags is None or not bool(self.word_tags.any()):
            return None
        share = self.word_tags / self.word_tags.sum(-1, keepdim=True).clamp_min(1)
        columns = torch.tensor([self.labels.index(tag) for tag in tags], device=share.device)
        allowed = (share[:, columns] >= min_share).T
        allowed[~allowed.any(-1)] = True
        return allowed.cpu()

    @staticmethod
    def tag_set() -> tuple[str, ...]:
        """SPECIAL_TAG, then the UPOS tags in alphabetical order."""
        return (SPECIAL_TAG, *sorted(UPOS_TAGS))

    def target(self, tag_rows: Sequence[Sequence[str]], length: int) -> torch.Tensor:
        """Tag ids [B, length]: SPECIAL_TAG at START, after the last word (END, PAD) and tags between.

        Scoring the special positions too makes a POS target fix the sentence length.

        Raises:
            ValueError: an unknown tag (named, with the tag set), or a sequence longer than length − 2.
        """
        index = {tag: k for k, tag in enumerate(self.labels)}
        out = torch.full((len(tag_rows), length), index[SPECIAL_TAG], dtype=torch.long)
        for row, tags in enumerate(tag_rows):
            if len(tags) > length - 2:
                raise ValueError(
                    f"POS sequence of {len(tags)} tags does not fit L = {length} (at most {length - 2} words)"
                )
            for p, tag in enumerate(tags, start=1):
                if tag not in index or tag == SPECIAL_TAG:
                    raise ValueError(f"unknown POS tag {tag!r}; valid tags: {', '.join(self.labels[1:])}")
                out[row, p] = index[tag]
        return out

    def logits(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """Tag logits [B, L, C]."""
        return self.head(self.features(x, t))

    def item_logits(self, x: torch.Tensor, t: torch.Tensor | float, target: torch.Tensor) -> ItemLogits:
        """Every position is an item: the tag logits [B, L, C] and the target itself."""
        return self.logits(x, t), target

    def output_bias(self) -> torch.Tensor:
        return self.head.bias

    def predicted_items(self, x: torch.Tensor, t: torch.Tensor | float, target: torch.Tensor) -> torch.Tensor:
        return self.logits(x, t).argmax(-1)[self._counted(target)]


class TreeClassifier(ItemLabels):
    """Span-chart classifier; targets are charts of label ids [B, L, L] (cell (i, j), i < j; IGNORE = not scored).

    Word spans (a, b) of `Tree.spans()` (words a..b−1) sit in cell (a+1, b+1): position 0 is START.
    """

    trivial = NO_SPAN  # accuracy counts the constituents

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__(config)
        h = config.hidden
        # MLP(concat[h_i; h_{j−1}]) with its first layer split as W_first·h_i + W_last·h_{j−1}:
        # the same function, but each half is applied once per position instead of once per cell.
        self.first = nn.Linear(h, h)
        self.last = nn.Linear(h, h, bias=False)
        self.label = nn.Sequential(nn.GELU(), nn.Linear(h, len(config.labels)))

    @staticmethod
    def cell_labels(tree: Tree) -> dict[tuple[int, int], str]:
        """Word span (a, b) -> its label, unary chains joined by CHAIN_SEP outermost first."""
        chains: dict[tuple[int, int], list[str]] = {}
        for start, end, label in tree.spans():  # pre-order: an outer node precedes its unary child
            chains.setdefault((start, end), []).append(label)
        return {span: CHAIN_SEP.join(labels) for span, labels in chains.items()}

    def span_labels(self) -> tuple[str, ...]:
        """The single constituent labels that occur in some chart label."""
        return tuple(sorted({part for label in self.labels[1:] for part in label.split(CHAIN_SEP)}))

    def target(self, trees: Sequence[Tree], length: int) -> torch.Tensor:
        """Charts [B, length, length]: every cell inside the sentence gets its label or NO_SPAN.

        Raises:
            ValueError: a tree with more than length − 2 words, or a label this classifier does not know.
        """
        index = {label: k for k, label in enumerate(self.labels)}
        out = torch.full((len(trees), length, length), IGNORE, dtype=torch.long)
        for row, tree in enumerate(trees):
            n = len(tree.leaves())
            if n > length - 2:
                raise ValueError(f"tree of {n} words does not fit L = {length} (at most {length - 2} words)")
            inside = out[row, 1 : n + 2, 1 : n + 2]  # a view: positions 1..n+1 (the words and END)
            inside[torch.ones(n + 1, n + 1, dtype=torch.bool).triu(1)] = index[NO_SPAN]
            for (a, b), label in self.cell_labels(tree).items():
                if label not in index:
                    raise ValueError(f"unknown constituent label {label!r}; valid labels: {', '.join(self.labels[1:])}")
                out[row, a + 1, b + 1] = index[label]
        return out

    def cell_logits(
        self, h: torch.Tensor, i: torch.Tensor, j: torch.Tensor, rows: torch.Tensor | slice = slice(None)
    ) -> torch.Tensor:
        """Label logits of cells (i[m], j[m]) from h [B, L, H]: [B, M, C]; given `rows`, of row rows[m]: [M, C]."""
        return self.label(self.first(h)[rows, i] + self.last(h)[rows, j - 1])

    def item_logits(self, x: torch.Tensor, t: torch.Tensor | float, target: torch.Tensor) -> ItemLogits:
        """The items are the cells (i, j), i < j, that some row of the batch scores: only those are computed."""
        L = target.shape[-1]
        i, j = torch.triu_indices(L, L, 1, device=target.device)
        keep = (target[:, i, j] != IGNORE).any(0)
        i, j = i[keep], j[keep]
        return self.cell_logits(self.features(x, t), i, j), target[:, i, j]

    def span_log_prob(self, x: torch.Tensor, t: torch.Tensor | float, start: int, end: int, label: str) -> torch.Tensor:
        """log p(words start..end−1 form a `label` constituent | x_t), [B]: the mass of chart labels containing it."""
        members = [k for k, chain in enumerate(self.labels) if k and label in chain.split(CHAIN_SEP)]
        if not members:
            raise ValueError(f"unknown constituent label {label!r}; valid labels: {', '.join(self.span_labels())}")
        cell = torch.tensor([start + 1], device=x.device), torch.tensor([end + 1], device=x.device)
        logp = self.cell_logits(self.features(x, t), *cell).log_softmax(-1)[:, 0]  # [B, C]
        return logp[:, members].logsumexp(-1)

    def output_bias(self) -> torch.Tensor:
        last = self.label[-1]
        assert isinstance(last, nn.Linear)
        return last.bias

    def predicted_items(self, x: torch.Tensor, t: torch.Tensor | float, target: torch.Tensor) -> torch.Tensor:
        """The predicted label of each gold constituent cell (span-label accuracy)."""
        rows, i, j = self._counted(target).nonzero().unbind(1)
        return self.cell_logits(self.features(x, t), i, j, rows).argmax(-1)


CLASSES: dict[str, type[LatentClassifier]] = {
    "attribute": AttributeClassifier,
    "pos": PosClassifier,
    "tree": TreeClassifier,
    "words": WordsClassifier,
}


def classifier_dir(run_dir: str | Path, task: str) -> Path:
    """Where a run keeps its `task` classifier: RUN/classifiers/<task>/."""
    if task not in TASKS:
        raise ValueError(f"unknown classifier task {task!r}; valid tasks: {', '.join(TASKS)}")
    return Path(run_dir) / "classifiers" / task


def has_classifier(run_dir: str | Path, task: str) -> bool:
    """Whether the run has a trained `task` classifier (its config.json marks it complete)."""
    return (classifier_dir(run_dir, task) / "config.json").is_file()


def load_classifier(run_dir: str | Path, task: str) -> LatentClassifier:
    """Load the run's `task` classifier (eval mode); ValueError if it was never trained or is corrupt."""
    directory = classifier_dir(run_dir, task)
    if not has_classifier(run_dir, task):
        raise ValueError(
            f"no {task} classifier in {run_dir}: train one with `difflm train-classifier {run_dir} --task {task}`"
        )
    return LatentClassifier.load(directory)
