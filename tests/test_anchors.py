"""Length anchors and length bucketing: the denoiser told each row's length by its clean PAD
tail, lengths drawn from the training sentences', and batches cut after their longest row."""

from __future__ import annotations

import pytest
import torch

import difflm
from difflm import control
from difflm.config import Config
from difflm.model.anchors import anchor, anchors_of, draw_lengths, tail, word_counts
from difflm.objectives import Batch
from difflm.objectives.diffusion import e2e_loss
from difflm.run import build_model
from difflm.sampling.anchors import AnchoredDenoiser
from difflm.sampling.wrappers import DenoiserWrapper
from difflm.text.vocab import Vocab
from difflm.train import batch_indices, bucketed_pool
from tests.conftest import tiny_config

torch.set_num_threads(1)
PAD, START, END = Vocab.PAD_ID, Vocab.START_ID, Vocab.END_ID


@pytest.fixture(scope="module")
def run(tmp_path_factory, toy_corpus):
    from difflm.train import train

    out = tmp_path_factory.mktemp("runs") / "anchored"
    config = tiny_config(
        f"lines:{toy_corpus}",
        "train.steps=300",
        "train.lr=3e-3",
        "rounding.kind=contextual",
        "diffusion.length_anchors=true",
        "train.length_pool=4",
    )
    train(config, out, progress=False)
    return out


@pytest.fixture(scope="module")
def pipe(run):
    return difflm.load(run)


def test_tail_counts_and_draws():
    ids = torch.tensor([[START, 5, END, PAD, PAD], [START, 5, 6, 7, END]])
    assert anchors_of(ids).tolist() == [[False, False, True, True, True], [False] * 4 + [True]]
    assert torch.equal(tail(torch.tensor([1, 3]), 5), anchors_of(ids))
    embedding = build_model(tiny_config("grammar", "diffusion.length_anchors=true"), 12).embedding
    x = anchor(torch.zeros(2, 5, embedding.dim), anchors_of(ids), embedding)
    assert torch.equal(x, torch.where(anchors_of(ids)[..., None], embedding(ids), 0.0).detach())  # END, then PAD
    assert word_counts(ids, 5).tolist() == [0, 1, 0, 1]
    counts = torch.tensor([0.0, 5.0, 0.0, 1.0])
    drawn = draw_lengths(counts, 400, 3, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {1, 3} and 0.75 < (drawn == 1).float().mean() < 0.92  # 5 : 1
    assert set(draw_lengths(counts, 50, 2).tolist()) == {1}  # at most 2 words
    with pytest.raises(ValueError, match="no training sentence has at most 0 words"):
        draw_lengths(counts, 1, 0)


def test_the_loss_reads_the_pad_tail_clean():
    config = tiny_config("grammar", "diffusion.length_anchors=true", "model.self_condition=false")
    model = build_model(config, 12)
    ids = torch.tensor([[START, 5, 6, END, PAD, PAD, PAD, PAD]] * 4)
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    out = e2e_loss(model, Batch(ids), config, generator=torch.Generator().manual_seed(0))
    x_t, clean = seen[0], model.embedding(ids).detach()
    assert torch.equal(x_t[:, 3:], clean[:, 3:])  # the anchors, END and PAD, at every drawn t
    assert not torch.isclose(x_t[:, :3], clean[:, :3]).all(-1).any()  # the rest noised
    assert torch.isfinite(out.loss)


def test_bucketed_batches_serve_every_row_once_and_keep_lengths_close():
    lengths = torch.randint(3, 40, (640,), generator=torch.Generator().manual_seed(0))
    pool, batch = 8, 16
    plain = torch.cat([batch_indices(s, batch, 640, 0, 0, 1) for s in range(pool)])
    bucketed = list(bucketed_pool(0, batch, lengths, 0, 0, 1, pool))
    assert sorted(torch.cat(bucketed).tolist()) == sorted(plain.tolist())
    spread = max(int(lengths[b].max() - lengths[b].min()) for b in bucketed)
    assert spread < int(lengths[plain].max() - lengths[plain].min()) / 2
    assert torch.equal(bucketed_pool(0, batch, lengths, 0, 0, 1, pool)[3], bucketed[3])  # drawn again on resume


def test_length_bucketing_needs_anchors_and_anchors_need_the_diffusion_generator():
    with pytest.raises(ValueError, match="set diffusion.length_anchors=true"):
        tiny_config("grammar", "train.length_pool=8")
    assert tiny_config("grammar", "train.length_pool=8", "model.kind=autoregressive").train.length_pool == 8
    with pytest.raises(ValueError, match="length_anchors needs model.generator=diffusion"):
        tiny_config("grammar", "diffusion.length_anchors=true", "model.generator=shortcut")
    assert isinstance(tiny_config("grammar"), Config)


def test_an_anchored_run_writes_lengths_drawn_from_its_training_sentences(pipe):
    assert pipe.model.lengths is not None
    assert set(pipe.model.lengths.nonzero().flatten().tolist()) == {8, 9, 10}  # the toy corpus
    texts = pipe.sample(32, steps=20, seed=0)
    assert {len(t.split()) for t in texts} <= {8, 9, 10} and len({len(t.split()) for t in texts}) > 1
    factorized = pipe.generate(32, steps=20, seed=0, rounding="factorized")
    lengths = (factorized.tokens != PAD).sum(1) - 2  # START and END (or the word written at n + 1)
    assert ((factorized.tokens == PAD).sum(1) >= pipe.config.data.max_len - 12).all()  # the anchors stay PAD
    assert set(lengths.tolist()) <= {7, 8, 9, 10}


def test_an_anchored_run_keeps_exact_constraints_exact(pipe):
    L = pipe.config.data.max_len
    texts = pipe.sample(16, steps=20, seed=1, constraints=[control.Length(7, max_len=L)])
    assert all(len(t.split()) == 7 for t in texts), texts
    infill = control.Infill("Zizzi serves ___ food in the ___ ___ .", pipe.vocab, max_len=L)
    texts = pipe.sample(16, steps=20, seed=2, constraints=[infill])
    assert all(infill.satisfied(t.split()) for t in texts), texts
    with pytest.raises(ValueError, match=r"fix different lengths: \[7, 9\]"):
        pipe.sample(2, steps=2, constraints=[control.Length(7, max_len=L), infill])


class Spy(DenoiserWrapper):
    """The network, recording the inputs it was called on."""

    def __init__(self, denoiser):
        super().__init__(denoiser)
        self.seen = []

    def __call__(self, x_t, t, **inputs):
        self.seen.append(x_t)
        return self.denoiser(x_t, t, **inputs)


def test_anchors_cut_each_length_repeat_over_a_guidance_batch_and_refuse_a_misfit(pipe):
    spy = Spy(pipe.model)
    anchored = AnchoredDenoiser(spy, tail(torch.tensor([2, 3]), 8))
    x = torch.randn(4, 8, pipe.config.model.embed_dim)
    with torch.no_grad():
        pred = anchored(x, torch.full((4,), 0.5), self_cond=torch.zeros_like(x))
    table = pipe.model.embedding.table()
    end, pad = table[END], table[PAD]
    # one call per length, each cut after its END: rows 0 and 2 (2 words), then rows 1 and 3 (3 words)
    assert [tuple(seen.shape[:2]) for seen in spy.seen] == [(2, 4), (2, 5)]
    assert torch.equal(spy.seen[0][:, 3], end.expand(2, -1)) and torch.equal(spy.seen[1][0, :4], x[1, :4])
    assert pred.x0.shape == x.shape and pred.logits.shape[:2] == (4, 8)
    assert torch.equal(pred.x0[0, 3], end) and torch.equal(pred.x0[0, 4:], pad.expand(4, -1))
    assert torch.equal(pred.x0[1, 4], end) and torch.equal(pred.x0[3, 5:], pad.expand(3, -1))
    assert (pred.logits[:, 5:].argmax(-1) == PAD).all()
    with pytest.raises(ValueError, match="anchors were set for 2 rows"):
        anchored(torch.randn(3, 8, pipe.config.model.embed_dim), torch.full((3,), 0.5))
