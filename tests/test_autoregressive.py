import math

import pytest
import torch

from difflm.config import ModelConfig
from difflm.model.autoregressive import CausalLM, perplexity
from difflm.text.vocab import Vocab
from difflm.train import Trainer
from tests.conftest import tiny_config

V, L = 12, 10


def make() -> CausalLM:
    torch.manual_seed(0)
    return CausalLM(ModelConfig(kind="autoregressive", hidden=32, layers=2, heads=4, dropout=0.0), V, L).eval()


def test_is_causal_and_the_cache_matches_a_full_pass():
    model = make()
    ids = torch.randint(4, V, (2, L))
    full, _ = model(ids)
    changed = ids.clone()
    changed[:, 6:] = 5
    assert torch.allclose(model(changed)[0][:, :6], full[:, :6], atol=1e-5)  # no look-ahead
    cache, steps = None, []
    for i in range(L):
        logits, cache = model(ids[:, i : i + 1], cache, start=i)
        steps.append(logits)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-4)


def test_loss_counts_tokens_up_to_the_first_end():
    model = make().requires_grad_(False)
    ids = torch.tensor([[Vocab.START_ID, 5, 6, Vocab.END_ID, 0, 0, 0, 0, 0, 0]])
    nll, mask = model.token_nll(ids)
    assert mask.tolist() == [[True, True, True, False, False, False, False, False, False]]
    assert model.loss(ids).item() == pytest.approx(float(nll[0, :3].mean()), rel=1e-6)
    assert perplexity(model, ids) == pytest.approx(math.exp(float(nll[0, :3].mean())), rel=1e-5)


def test_generate_rows_are_well_formed_and_seeded():
    model = make()
    a = model.generate(5, generator=torch.Generator().manual_seed(1), top_p=0.9)
    b = model.generate(5, generator=torch.Generator().manual_seed(1), top_p=0.9)
    assert torch.equal(a, b) and a.shape == (5, L)
    assert (a[:, 0] == Vocab.START_ID).all()
    for row in a.tolist():
        end = row.index(Vocab.END_ID)  # every row ends inside L
        assert all(x == Vocab.PAD_ID for x in row[end + 1 :])
    with pytest.raises(ValueError):
        model.generate(2, top_p=0.0)


def test_generate_never_writes_unk(monkeypatch):
    model = make()
    forward = model.forward

    def unk_first(*args, **kwargs):  # an LM that would write <unk> everywhere
        logits, cache = forward(*args, **kwargs)
        logits[..., Vocab.UNK_ID] += 1e4
        return logits, cache

    monkeypatch.setattr(model, "forward", unk_first)
    rows = model.generate(8, generator=torch.Generator().manual_seed(0))
    assert not (rows == Vocab.UNK_ID).any()


def test_teacher_trains_on_the_toy_corpus(tmp_path, toy_corpus):
    config = tiny_config(f"lines:{toy_corpus}", "model.kind=autoregressive", "train.steps=150", "train.lr=3e-3")
    trainer = Trainer(config, tmp_path / "lm", progress=False)
    last = trainer.run()
    # 4 names × 4 foods × 2 areas, uniform: the ideal perplexity over the 9–11 tokens is ~1.4.
    assert perplexity(trainer.ema, trainer.data.valid) < 2.5, last
