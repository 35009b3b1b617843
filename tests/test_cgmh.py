"""CGMH: the acceptance ratio in closed form, chains that converge to a toy LM's known
distribution (with and without a protected keyword or a classifier factor), and a tiny AR
run through the pipeline and the CLI."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import difflm
from difflm import control
from difflm.cli import main
from difflm.control.classifiers import ClassifierConfig, TreeClassifier
from difflm.sampling.cgmh import BLANK, Chain, cgmh, log_acceptance
from difflm.text.vocab import Vocab
from tests.conftest import tiny_config

torch.set_num_threads(1)
SHAPE = ClassifierConfig("tree", 16, 16, ("<none>", "NP"))
WORDS, V, MAX_LEN = (4, 5, 6), 7, 5  # sentences of 1 to 3 words: START w… END fits 5 positions
SENTENCES = [s for n in (1, 2, 3) for s in itertools.product(WORDS, repeat=n)]
_MASS = torch.rand(len(SENTENCES), generator=torch.Generator().manual_seed(3)) + 0.2
PI = dict(zip(SENTENCES, (_MASS / _MASS.sum()).tolist()))  # every sentence possible, unequal weights


class ToyLM:
    """The exact next-token logits of PI: p(w | prefix) = PI(prefix w …)/PI(prefix …), END with
    PI(prefix)'s share; a prefix is coded in base 4 (digit w − 3), looked up in a table."""

    def __init__(self) -> None:
        self.table = torch.full((4**4, V), -30.0)
        for n in range(4):
            for prefix in itertools.product(WORDS, repeat=n):
                code = sum((w - 3) * 4 ** (n - 1 - k) for k, w in enumerate(prefix))
                mass = {s: p for s, p in PI.items() if s[:n] == prefix}
                total = sum(mass.values())
                if total == 0:
                    continue
                for w in WORDS:
                    self.table[code, w] = math.log(
                        max(sum(p for s, p in mass.items() if len(s) > n and s[n] == w), 1e-30) / total
                    )
                self.table[code, Vocab.END_ID] = math.log(max(PI.get(prefix, 0.0), 1e-30) / total)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        digits = torch.where((rows >= 4) & (rows <= 6), rows - 3, 0)
        codes = torch.zeros_like(rows)
        for t in range(1, rows.shape[1]):
            codes[:, t] = (codes[:, t - 1] * 4 + digits[:, t]) % 4**4
        return self.table[codes]


def empirical(chains: list[Chain]) -> dict[tuple[int, ...], float]:
    counts: dict[tuple[int, ...], float] = {}
    for chain in chains:
        counts[tuple(chain.words)] = counts.get(tuple(chain.words), 0) + 1 / len(chains)
    return counts


def total_variation(p: dict, q: dict) -> float:
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def test_the_acceptance_ratio_in_closed_form():
    # Insert into 2 words (1 unprotected): A = π'/(π)·(1/2)/((1/3)·q).
    assert log_acceptance("insert", -1.0, -2.0, math.log(0.25), 0.0, n=2, r_old=1) == pytest.approx(
        1.0 + math.log((1 / 2) / ((1 / 3) * 0.25))
    )
    # Delete from 3 words (2 unprotected): A = π'/π·(1/3)·q_rev/(1/2).
    assert log_acceptance("delete", -2.0, -1.0, 0.0, math.log(0.5), n=3, r_old=2) == pytest.approx(
        -1.0 + math.log((1 / 3) * 0.5 / (1 / 2))
    )
    # Replace: π'/π·q(old)/q(new); the opposite moves undo each other's ratio.
    assert log_acceptance("replace", -1.0, -3.0, math.log(0.2), math.log(0.4), n=2, r_old=2) == pytest.approx(
        2.0 + math.log(0.4 / 0.2)
    )
    up = log_acceptance("insert", -1.0, -2.0, math.log(0.25), 0.0, n=2, r_old=2)
    down = log_acceptance("delete", -2.0, -1.0, 0.0, math.log(0.25), n=3, r_old=3)
    assert up == pytest.approx(-down)
    with pytest.raises(ValueError, match="unknown move"):
        log_acceptance("swap", 0.0, 0.0, 0.0, 0.0, n=1, r_old=1)


def test_chains_converge_to_the_lm_distribution():
    starts = [Chain([4], [False])] * 2000
    chains, rate = cgmh(ToyLM(), starts, steps=60, max_len=MAX_LEN, generator=torch.Generator().manual_seed(0))
    assert 0.05 < rate < 1
    assert total_variation(empirical(chains), PI) < 0.07


def test_a_classifier_factor_tilts_the_stationary_distribution():
    """π(x) ∝ p_LM(x)·exp(f(x)): with f = log of a weight per count of 5s, the chains sample
    the tilted distribution, and f sees the rows the LM sees."""
    weight = [0.2, 1.0, 3.0, 6.0]  # by the number of 5s in the sentence

    def factor(rows):
        return torch.tensor(weight).log()[(rows == 5).sum(1)]

    starts = [Chain([4], [False])] * 2000
    chains, _ = cgmh(
        ToyLM(), starts, steps=60, max_len=MAX_LEN, factor=factor, generator=torch.Generator().manual_seed(4)
    )
    target = {s: p * weight[s.count(5)] for s, p in PI.items()}
    target = {s: p / sum(target.values()) for s, p in target.items()}
    assert total_variation(empirical(chains), target) < 0.07
    assert total_variation(PI, target) > 0.2  # the tilt is large enough to tell apart


def exact_blank_filler(rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """A perfect masked LM of PI: q(w | x with a blank) ∝ PI(x with w in the blank)."""
    out = torch.full((len(rows), V), -30.0)
    for b, row in enumerate(rows.tolist()):
        words = row[1 : row.index(Vocab.END_ID)]
        for w in WORDS:
            filled = tuple(w if x == BLANK else x for x in words)
            out[b, w] = math.log(max(PI.get(filled, 0.0), 1e-30))
    assert bool((rows[torch.arange(len(rows)), positions] == BLANK).all())
    return out


def test_chains_with_a_masked_lm_proposal_converge_to_the_lm_distribution():
    """Proposals that read both sides of the slot (a masked LM, here the exact one) keep π."""
    starts = [Chain([4], [False])] * 2000
    chains, rate = cgmh(
        ToyLM(),
        starts,
        steps=60,
        max_len=MAX_LEN,
        propose=exact_blank_filler,
        generator=torch.Generator().manual_seed(5),
    )
    assert 0.05 < rate < 1
    assert total_variation(empirical(chains), PI) < 0.07


def test_a_protected_keyword_holds_in_every_sample():
    """A protected 6 is never removed; the chain's states are (sentence, which 6 is protected),
    so a sentence's share is ∝ π(x) times the number of 6s in it."""
    starts = [Chain([6], [True])] * 2000
    chains, _ = cgmh(ToyLM(), starts, steps=60, max_len=MAX_LEN, generator=torch.Generator().manual_seed(1))
    assert all(6 in chain.words and chain.words[chain.protected.index(True)] == 6 for chain in chains)
    target = {s: p * s.count(6) for s, p in PI.items() if 6 in s}
    target = {s: p / sum(target.values()) for s, p in target.items()}
    assert total_variation(empirical(chains), target) < 0.07


def test_annealing_settles_on_the_mode():
    mode = max(PI, key=PI.__getitem__)
    starts = [Chain([4], [False])] * 1000
    chains, _ = cgmh(
        ToyLM(), starts, steps=60, max_len=MAX_LEN, anneal=True, generator=torch.Generator().manual_seed(2)
    )
    assert empirical(chains).get(mode, 0.0) > 3 * PI[mode]


def test_a_fixed_length_keeps_the_length():
    starts = [Chain([4, 4], [False, False])] * 500
    chains, _ = cgmh(ToyLM(), starts, steps=30, max_len=MAX_LEN, fixed_length=True, generator=torch.Generator())
    assert all(len(c.words) == 2 for c in chains)
    with pytest.raises(ValueError, match="at most 3 words"):
        cgmh(ToyLM(), [Chain([4] * 4, [False] * 4)], steps=1, max_len=MAX_LEN)


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory, toy_corpus):
    from difflm.train import train

    out = tmp_path_factory.mktemp("runs") / "lm"
    config = tiny_config(f"lines:{toy_corpus}", "model.kind=autoregressive", "train.steps=100", "train.lr=3e-3")
    train(config, out, progress=False)
    return out


def test_cgmh_through_the_pipeline_and_the_cli(lm_run, capsys):
    pipe = difflm.load(lm_run)
    keywords = control.Keywords(["French", "Zizzi"], pipe.vocab)
    out = pipe.generate(12, sampler="cgmh", steps=40, seed=0, constraints=[keywords])
    texts = pipe.decode(out.tokens)
    assert all({"French", "Zizzi"} <= set(t.split()) for t in texts) and out.nfe == 41
    assert texts == pipe.decode(pipe.generate(12, sampler="cgmh", steps=40, seed=0, constraints=[keywords]).tokens)
    sized = pipe.decode(
        pipe.generate(6, sampler="cgmh", steps=20, constraints=[keywords, control.Length(5, max_len=16)]).tokens
    )
    assert all(len(t.split()) == 5 and {"French", "Zizzi"} <= set(t.split()) for t in sized)
    infill = control.Infill("Zizzi serves ___ food in the ___ .", pipe.vocab, max_len=16)
    filled = pipe.sample(6, sampler="cgmh", steps=20, constraints=[infill], anneal=True)
    assert all(infill.satisfied(t.split()) for t in filled), filled
    for options, message in (
        ({"constraints": [infill, keywords]}, "infilling alone"),
        ({"constraints": [control.Span(0, 1, "NP", run=TreeClassifier(SHAPE))]}, "continuous run's noisy latents"),
        ({"constraints": [object()]}, "object cannot steer CGMH"),
        ({"eta": 0.5}, "eta do not apply to this autoregressive sampler"),
        ({"sampler": "ddpm"}, "sampler='cgmh'"),
    ):
        with pytest.raises(ValueError, match=message):
            pipe.generate(2, **{"sampler": "cgmh", **options})
    capsys.readouterr()
    argv = ["control", str(lm_run), "--sampler", "cgmh", "--keywords", "Zizzi", "--steps", "20", "--n", "3"]
    assert main(argv) == 0
    assert "keywords 3/3" in capsys.readouterr().err


def test_a_masked_run_proposes_the_words(lm_run, tiny_run, tmp_path, toy_corpus, capsys):
    """A masked diffusion run of the same corpus as CGMH's proposal model: keywords still hold,
    each step costs one more call, and a run of another kind is refused by name."""
    from difflm.train import train

    masked = tmp_path / "masked"
    train(tiny_config(f"lines:{toy_corpus}", "model.kind=masked", "train.steps=100"), masked, progress=False)
    pipe = difflm.load(lm_run)
    keywords = control.Keywords(["French", "Zizzi"], pipe.vocab)
    out = pipe.generate(8, sampler="cgmh", steps=20, constraints=[keywords], proposals=masked)
    assert all({"French", "Zizzi"} <= set(t.split()) for t in pipe.decode(out.tokens)) and out.nfe == 41
    with pytest.raises(ValueError, match="proposals come from a masked diffusion run"):
        pipe.generate(2, sampler="cgmh", steps=2, proposals=tiny_run)
    capsys.readouterr()
    argv = ["control", str(lm_run), "--sampler", "cgmh", "--keywords", "Zizzi", "--steps", "5", "--n", "2"]
    assert main([*argv, "--proposals", str(masked)]) == 0 and "keywords 2/2" in capsys.readouterr().err
