"""The AR run's control methods beside CGMH: FUDGE's draw is Bayes' rule over the LM's top k,
the prefix noise of its classifiers, beam search against enumeration, and FUDGE, FT-sample
and FT-search through the pipeline and the CLI on a conditioned AR run of the toy E2E corpus."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import difflm
from difflm import control
from difflm.cli import main
from difflm.control.classifiers import AttributeClassifier, ClassifierConfig
from difflm.sampling.beam import beam_search
from difflm.sampling.fudge import fudge
from difflm.text.vocab import Vocab
from difflm.train_classifier import PrefixNoise, classifier_training, train_classifier
from tests.conftest import tiny_config

torch.set_num_threads(1)
WORDS, V = (4, 5, 6), 7


class PositionLM(nn.Module):
    """p(w_i | w_<i) = softmax(table[i − 1]): the next word depends on its position only, so
    every sentence's probability is a product of known factors."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.pos = nn.Parameter(torch.zeros(len(table) + 1, 1))

    def forward(self, ids, cache=None, start=0, cond=None):
        logits = self.table[start : start + ids.shape[1]].log_softmax(-1)
        return logits.expand(len(ids), -1, -1), []


def table(rows: list[dict[int, float]]) -> torch.Tensor:
    """Next-token probabilities per position as {word: p}, the rest impossible."""
    out = torch.full((len(rows), V), -1e9)
    for i, probs in enumerate(rows):
        for w, p in probs.items():
            out[i, w] = math.log(p)
    return out


def test_fudge_draws_by_bayes_rule_over_the_top_k():
    """p(w | START, c) ∝ p_LM(w)·p(c | START w): the empirical first words match it, the
    discriminator sees the future masked, and a top-1 FUDGE never leaves the LM's mode."""
    lm = PositionLM(table([{4: 0.5, 5: 0.3, 6: 0.2}, {Vocab.END_ID: 1.0}]))
    likes = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.1, 0.4, 0.9])  # p(c | START w) of each first word w
    seen = []

    def discriminate(rows):
        seen.append(rows)
        return likes[rows[:, 1]].log()

    n = 40000
    ids, scored = fudge(lm, n, discriminate, mask_id=V, max_len=3, generator=torch.Generator().manual_seed(0), top_k=V)
    expected = torch.tensor([0.5 * 0.1, 0.3 * 0.4, 0.2 * 0.9])
    expected /= expected.sum()
    drawn = torch.stack([(ids[:, 1] == w).float().mean() for w in WORDS])
    assert (drawn - expected).abs().sum() / 2 < 0.01, (drawn, expected)
    assert bool((ids[:, 2] == Vocab.END_ID).all()) and scored == n * V
    assert all(bool((rows[:, 2] == V).all()) for rows in seen)  # the future is masked
    greedy, _ = fudge(lm, 50, discriminate, mask_id=V, max_len=3, generator=torch.Generator(), top_k=1)
    assert bool((greedy[:, 1] == 4).all())


def test_fudge_keeps_to_the_allowed_words():
    lm = PositionLM(table([{4: 0.5, 5: 0.3, 6: 0.2}, {5: 0.5, Vocab.END_ID: 0.5}, {Vocab.END_ID: 1.0}]))
    allowed = torch.ones(4, V, dtype=torch.bool)
    allowed[1, 4] = False
    ids, _ = fudge(lm, 200, None, mask_id=V, max_len=4, generator=torch.Generator().manual_seed(1), allowed=allowed)
    assert not bool((ids[:, 1] == 4).any()) and bool((ids == Vocab.END_ID).any(1).all())
    allowed[1] = False
    with pytest.raises(ValueError, match="position 1 no word"):
        fudge(lm, 2, None, mask_id=V, max_len=4, generator=torch.Generator(), allowed=allowed)


def test_prefix_noise_hides_the_end_of_each_sentence():
    ids = torch.tensor([[1, 4, 5, 2, 0, 0], [1, 6, 2, 0, 0, 0]])
    noise = PrefixNoise(mask_id=V)
    full = noise(ids, torch.zeros(2), torch.Generator())
    assert full.tolist() == [[1, 4, 5, 2, V, V], [1, 6, 2, V, V, V]]  # PAD after END is always masked
    half = noise(ids, torch.tensor([0.5, 0.5]), torch.Generator())
    assert half.tolist() == [[1, 4, V, V, V, V], [1, 6, V, V, V, V]]
    assert noise(ids, torch.tensor([0.99, 0.99]), torch.Generator())[:, 1:].eq(V).all()  # START always stays


def test_beam_search_finds_the_most_likely_sentences():
    """With beams enough to keep every prefix, beam search is exhaustive: its hypotheses are the
    sentences of the best mean token log-probability (END included), found by enumeration."""
    probs = [{4: 0.6, 5: 0.3, 6: 0.1}, {4: 0.2, 5: 0.3, 6: 0.1, 2: 0.4}, {6: 0.9, 2: 0.1}, {2: 1.0}]
    lm = PositionLM(table(probs))
    means = {}
    for k in (1, 2, 3):
        for words in itertools.product(WORDS, repeat=k):
            path = [*words, Vocab.END_ID]
            logp = [math.log(probs[i].get(w, 1e-300)) for i, w in enumerate(path)]
            means[words] = sum(logp) / len(path)
    best = sorted(means, key=lambda s: -means[s])[:3]
    out, calls = beam_search(lm, 3, beams=64, max_len=5)
    assert [tuple(row[1 : row.index(Vocab.END_ID)]) for row in out.tolist()] == best
    assert calls == 4
    with pytest.raises(ValueError, match="n ≤ beams"):
        beam_search(lm, 5, beams=4, max_len=5)


@pytest.fixture(scope="module")
def ft_run(tmp_path_factory, toy_e2e_corpus):
    """A conditioned AR run of the toy E2E corpus with a prefix attribute classifier."""
    from difflm.train import train

    out = tmp_path_factory.mktemp("runs") / "ft"
    config = tiny_config(
        f"e2e:{toy_e2e_corpus}",
        "model.kind=autoregressive",
        "model.condition=slots",
        "train.steps=150",
        "train.lr=3e-3",
    )
    train(config, out, progress=False)
    for task in ("attribute", "words"):
        train_classifier(
            out, task, training=classifier_training(steps=150, batch_size=32, lr=6e-3, eval_every=150), progress=False
        )
    return out


def share(texts: list[str], word: str = "Chinese") -> float:
    return sum(word in t.split() for t in texts) / len(texts)


def test_fudge_through_the_pipeline(ft_run, capsys):
    pipe = difflm.load(ft_run)
    chinese = control.Attribute("food", "Chinese", run=ft_run, weight=3.0)
    assert chinese.classifier.config.prefixes
    out = pipe.generate(32, sampler="fudge", seed=0, constraints=[chinese], top_k=20)
    guided = pipe.decode(out.tokens)
    assert share(guided) >= share(pipe.sample(32, seed=0)) + 0.4, guided
    assert 0 < chinese.calls <= 20 * out.nfe  # each sample scores at most top_k rows per position
    assert guided == pipe.sample(32, sampler="fudge", seed=0, constraints=[chinese], top_k=20)
    sized = pipe.sample(8, sampler="fudge", constraints=[control.Length(9, max_len=16)])
    assert all(len(t.split()) == 9 for t in sized), sized
    infill = control.Infill("Zizzi serves ___ food in the ___ .", pipe.vocab, max_len=16)
    assert all(infill.satisfied(t.split()) for t in pipe.sample(8, sampler="fudge", constraints=[infill]))
    latent = AttributeClassifier(ClassifierConfig("attribute", 16, 16, ("food=Chinese",)))
    for options, message in (
        ({"constraints": [control.Keywords(["Zizzi"], pipe.vocab)]}, "keywords are Mentions"),
        ({"constraints": [control.Attribute("food", "Chinese", run=latent)]}, "continuous run's noisy latents"),
        ({"anneal": True}, "anneal do not apply"),
    ):
        with pytest.raises(ValueError, match=message):
            pipe.generate(2, sampler="fudge", **options)
    capsys.readouterr()
    argv = ["control", str(ft_run), "--sampler", "fudge", "--attribute", "food=Chinese", "--n", "3"]
    assert main(argv) == 0 and "attribute" in capsys.readouterr().err


def test_fudge_mentions_keywords_by_a_words_classifier(ft_run, capsys):
    pipe = difflm.load(ft_run)
    mentions = control.Mentions(["French", "riverside"], run=ft_run, weight=3.0)
    plain = pipe.sample(32, seed=1)
    guided = pipe.sample(32, seed=1, sampler="fudge", constraints=[mentions], top_k=20)
    success = [sum(mentions.satisfied(t.split()) for t in texts) / 32 for texts in (plain, guided)]
    assert success[1] >= success[0] + 0.3, success
    assert mentions.score("Zizzi serves French food".split()) == 0.5
    with pytest.raises(ValueError, match="unknown word"):
        control.Mentions(["Chinatown"], run=ft_run)
    capsys.readouterr()
    argv = ["control", str(ft_run), "--sampler", "fudge", "--mentions", "French,riverside", "--n", "4"]
    assert main(argv) == 0 and "mentions" in capsys.readouterr().err


def test_cgmh_scores_whole_sentences_with_the_prefix_classifier(ft_run):
    """The same classifier, reading a whole sentence, is CGMH's soft attribute factor."""
    pipe = difflm.load(ft_run)
    chinese = control.Attribute("food", "Chinese", run=ft_run, weight=5.0)
    texts = pipe.sample(32, sampler="cgmh", steps=80, constraints=[chinese])
    assert share(texts) >= share(pipe.sample(32, sampler="cgmh", steps=80)) + 0.3, texts
    assert chinese.calls == pytest.approx(81, abs=1)  # the start, then one proposal per chain and step


def test_a_prefix_classifier_does_not_guide_a_discrete_run(ft_run, tmp_path, toy_e2e_corpus):
    from difflm.train import train

    masked = tmp_path / "masked"
    train(tiny_config(f"e2e:{toy_e2e_corpus}", "model.kind=masked", "train.steps=5"), masked, progress=False)
    prefix = control.Attribute("food", "Chinese", run=ft_run)
    with pytest.raises(ValueError, match="prefixes of an autoregressive run"):
        difflm.load(masked).generate(2, constraints=[prefix])


def test_a_conditioned_lm_is_the_ft_sample_baseline(ft_run, capsys):
    """An AR run trained with model.condition=slots samples p(x | c) (Diffusion-LM's FT-sample)."""
    pipe = difflm.load(ft_run)
    free = pipe.sample(32, seed=0)
    chinese = pipe.sample(32, seed=0, condition="food=Chinese")
    assert share(chinese) >= share(free) + 0.4, (free, chinese)
    with pytest.raises(ValueError, match="cfg_scale must be 1"):
        pipe.generate(2, condition="food=Chinese", cfg_scale=3.0)
    capsys.readouterr()
    argv = ["control", str(ft_run), "--attribute", "food=Chinese", "--cfg-scale", "1", "--n", "4"]
    assert main(argv) == 0 and "Chinese" in capsys.readouterr().out


def test_beam_search_is_the_ft_search_baseline(ft_run, capsys):
    pipe = difflm.load(ft_run)
    out = pipe.generate(3, sampler="beam", condition="food=Chinese")
    texts = pipe.decode(out.tokens)
    assert len(set(texts)) == 3 and all("Chinese" in t.split() for t in texts), texts
    assert out.nfe <= pipe.config.data.max_len
    assert pipe.sample(3, sampler="beam", condition="food=Chinese") == texts  # no randomness
    assert len(pipe.sample(2, sampler="beam")) == 2  # the unconditioned LM's most likely sentences
    with pytest.raises(ValueError, match="n ≤ beams"):
        pipe.generate(5, sampler="beam", beams=2)
    capsys.readouterr()
    argv = ["control", str(ft_run), "--attribute", "food=Chinese", "--cfg-scale", "1", "--sampler", "beam", "--n", "2"]
    assert main(argv) == 0 and "Chinese" in capsys.readouterr().out


def test_each_family_refuses_the_samplers_of_the_others(ft_run, tiny_run, capsys):
    """FUDGE, CGMH and beam search need an AR run; a diffusion sampler on an AR run is refused: one line, exit 2."""
    for run, sampler, message in (
        (tiny_run, "fudge", "fudge sampler runs on an autoregressive run"),
        (tiny_run, "cgmh", "cgmh sampler runs on an autoregressive run"),
        (tiny_run, "beam", "beam sampler runs on an autoregressive run"),
        (ft_run, "gibbs", "this run is an autoregressive LM"),
        (ft_run, "ddpm", "this run is an autoregressive LM"),
    ):
        assert main(["control", str(run), "--sampler", sampler, "--length", "5", "--n", "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
