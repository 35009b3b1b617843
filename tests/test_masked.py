"""Masked diffusion (MDLM): the forward process, the NELBO, the samplers with an oracle
denoiser on a toy distribution, and a tiny run through the pipeline and the CLI."""

from __future__ import annotations

import json
import math
from itertools import combinations

import pytest
import torch

import difflm
from difflm import control
from difflm.cli import main
from difflm.control.classifiers import ClassifierConfig, PosClassifier
from difflm.diffusion.masking import mask_rows, reveal_prob, visible_share
from difflm.objectives import Batch
from difflm.objectives.masked import masked_loss
from difflm.sampling.masked import MASKED_SAMPLERS
from difflm.text.vocab import Vocab
from tests.conftest import tiny_config

torch.set_num_threads(1)
START = Vocab.START_ID
# A toy distribution over rows START a b c with words 4..6: three rows, unequal weights.
TOY = {(START, 4, 5, 6): 0.5, (START, 5, 5, 4): 0.3, (START, 6, 4, 4): 0.2}
V, MASK = 7, 7


class Oracle:
    """The exact p(x_i | visible tokens of z) of TOY, as logits [B, L, V] (uniform where impossible),
    looked up from a table of every state of the three word positions."""

    lengths = None
    mask_id = MASK
    codes = (4, 5, 6, MASK)

    def __init__(self) -> None:
        self.table = torch.empty(4**3, 4, V)
        for index in range(4**3):
            row = [START, *(self.codes[index // 4**i % 4] for i in range(3))]
            fits = {x: p for x, p in TOY.items() if all(v == MASK or v == w for v, w in zip(row, x))}
            probs = torch.full((4, V), 1e-12)
            for x, p in fits.items():
                for i, w in enumerate(x):
                    probs[i, w] += p / sum(fits.values())
            self.table[index] = probs.log()

    def __call__(self, z: torch.Tensor, t: object = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        code = torch.zeros_like(z[:, 0])
        for i in range(3):
            code += (z[:, i + 1] == MASK).long() * 3 * 4**i + (z[:, i + 1] - 4).clamp(0, 2) * (
                z[:, i + 1] != MASK
            ) * 4**i
        return self.table[code]


def test_forward_marginals_and_reveal_probability():
    ids = torch.tensor([[START, 4, 5, 6]] * 20000)
    maskable = ids != START
    for t in (0.1, 0.5, 0.9):
        z = mask_rows(ids, torch.full((len(ids),), t), torch.rand(ids.shape), maskable, MASK)
        share = (z[:, 1:] == MASK).float().mean().item()
        assert abs(share - (1 - float(visible_share(torch.tensor(t))))) < 0.01  # q(z_i = m) = 1 − α_t = t
        assert (z[:, 0] == START).all() and ((z == ids) | (z == MASK)).all()
    # Masked at t, still masked at s with probability 1 − (t − s)/t = s/t: the marginal at s is s.
    assert reveal_prob(0.8, 0.2) == pytest.approx(0.75) and reveal_prob(0.5, 0.0) == 1.0


def test_the_nelbo_of_the_exact_denoiser_is_the_exact_nll():
    oracle = Oracle()
    # Enumerated: Σ_M B(k, L − k + 1)·Σ_{i∈M} −log p(x_i | x_∖M) is −log p(x) for every row (any-order AR).
    for x, p in TOY.items():
        words, total = x[1:], 0.0
        for k in range(1, 4):
            weight = math.factorial(k - 1) * math.factorial(3 - k) / math.factorial(3)
            for masked in combinations(range(3), k):
                z = torch.tensor([[START, *(MASK if i in masked else w for i, w in enumerate(words))]])
                logp = oracle(z).log_softmax(-1)[0]
                total += weight * sum(-logp[i + 1, words[i]].item() for i in masked)
        assert total == pytest.approx(-math.log(p), abs=1e-6)
    # The training loss is an unbiased Monte Carlo estimate of it (per modelled token).
    x = (START, 5, 5, 4)
    config = tiny_config("grammar", "model.kind=masked")
    estimates = [
        3
        * masked_loss(oracle, Batch(torch.tensor([x] * 2048)), config, generator=torch.Generator().manual_seed(s)).loss
        for s in range(12)
    ]
    mean, spread = float(torch.stack(estimates).mean()), float(torch.stack(estimates).std()) / math.sqrt(12)
    assert abs(mean + math.log(TOY[x])) < 4 * spread + 0.01, (mean, -math.log(TOY[x]), spread)


@pytest.mark.parametrize("sampler, steps", [("ancestral", 1000), ("confidence", 3)])
def test_oracle_samplers_reproduce_the_toy_distribution(sampler, steps):
    """Exact when one position is revealed at a time: the confidence sampler with K = 3 steps;
    the ancestral one as K grows (two positions revealed at the same step are drawn
    independently, which happens to about 3/K of the rows)."""
    canvas = torch.tensor([[START, MASK, MASK, MASK]] * 3000)
    tokens, calls = MASKED_SAMPLERS[sampler](
        Oracle(), canvas, mask_id=MASK, steps=steps, generator=torch.Generator().manual_seed(0)
    )
    rows = [tuple(r) for r in tokens.tolist()]
    assert sum(r not in TOY for r in rows) <= (0.01 * len(rows) if sampler == "ancestral" else 0)
    for x, p in TOY.items():
        assert abs(rows.count(x) / len(rows) - p) < 0.03, (sampler, x)
    assert calls <= steps
    few, _ = MASKED_SAMPLERS[sampler](Oracle(), canvas[:8], mask_id=MASK, steps=1000)
    assert few.shape == (8, 4)
    _, cached = MASKED_SAMPLERS["ancestral"](Oracle(), canvas[:1], mask_id=MASK, steps=1000)
    assert cached <= 3  # one row, three positions: at most three calls in a thousand steps


def test_samplers_never_change_fixed_tokens_and_respect_allowed_words():
    canvas = torch.tensor([[START, MASK, 5, MASK]] * 200)
    allowed = torch.ones(4, V, dtype=torch.bool)
    allowed[3, 6] = False  # the last word may not be 6
    for sampler in MASKED_SAMPLERS:
        tokens, _ = MASKED_SAMPLERS[sampler](
            Oracle(), canvas, mask_id=MASK, steps=4, generator=torch.Generator().manual_seed(1), allowed=allowed
        )
        assert (tokens[:, 2] == 5).all() and (tokens[:, 0] == START).all() and (tokens[:, 3] != 6).all()


@pytest.fixture(scope="module")
def run(tmp_path_factory, toy_corpus):
    from difflm.train import train

    out = tmp_path_factory.mktemp("runs") / "masked"
    train(
        tiny_config(f"lines:{toy_corpus}", "model.kind=masked", "train.steps=150", "train.lr=3e-3"), out, progress=False
    )
    return out


def test_a_masked_run_trains_and_samples_through_the_pipeline(run):
    pipe = difflm.load(run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["split"] == "train"]
    assert losses[-1] < 0.7 * losses[0]
    for sampler in MASKED_SAMPLERS:
        out = pipe.generate(6, sampler=sampler, steps=8, seed=0)
        assert out.tokens.shape == (6, 16) and 1 <= out.nfe <= 8
        assert (out.tokens != pipe.model.mask_id).all()
    assert pipe.sample(3, steps=8, seed=0) == pipe.sample(3, steps=8, seed=0)  # a seed reproduces
    assert pipe.default_sampler == "confidence"


def test_infilling_and_length_are_exact_on_a_masked_run(run):
    pipe = difflm.load(run)
    infill = control.Infill("Zizzi serves ___ food in the ___ .", pipe.vocab, max_len=16)
    for sampler in MASKED_SAMPLERS:
        texts = pipe.sample(8, sampler=sampler, steps=8, seed=0, constraints=[infill])
        kept = [t.split()[:2] + t.split()[3:6] for t in texts]
        assert all(k == ["Zizzi", "serves", "food", "in", "the"] for k in kept), texts
        length = control.Length(4, max_len=16)
        assert all(len(t.split()) == 4 for t in pipe.sample(8, sampler=sampler, steps=8, constraints=[length]))
    unguided = pipe.sample(16, steps=8, seed=0)
    assert sum(len(t.split()) == 4 for t in unguided) < 16  # the constraint, not the model, makes it exact


def test_keywords_are_exact_on_a_masked_run(run):
    pipe = difflm.load(run)
    keywords = control.Keywords(["Zizzi", "French"], pipe.vocab)
    for sampler in MASKED_SAMPLERS:
        out = pipe.generate(8, sampler=sampler, steps=8, seed=0, constraints=[keywords])
        texts = pipe.decode(out.tokens)
        assert all({"Zizzi", "French"} <= set(t.split()) for t in texts), texts
    unguided = pipe.sample(16, steps=8, seed=0)
    assert sum({"Zizzi", "French"} <= set(t.split()) for t in unguided) < 16
    with pytest.raises(ValueError, match="do not fit the masked positions"):
        pipe.sample(2, constraints=[keywords, control.Length(1, max_len=16)])


def test_masked_run_refuses_what_it_cannot_do(run, capsys):
    pipe = difflm.load(run)
    shape = ClassifierConfig("pos", 16, 16, PosClassifier.tag_set())
    with pytest.raises(ValueError, match="POS cannot steer a masked run"):
        pipe.sample(2, constraints=[control.POS("PROPN VERB", run=PosClassifier(shape), judge="text")])
    with pytest.raises(ValueError, match="apply to continuous runs"):
        pipe.sample(2, eta=0.5)
    for argv, message in (
        (["sample", str(run), "--sampler", "ddim"], "unknown masked sampler 'ddim'"),
        (["sample", str(run), "--sc-guidance", "2"], "apply to continuous runs"),
    ):
        capsys.readouterr()
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="model.kind must be one of"):
        tiny_config("grammar", "model.kind=absorbing")
    with pytest.raises(ValueError, match="diffusion.sweep needs model.kind=diffusion"):
        tiny_config("grammar", "model.kind=masked", "diffusion.sweep=0.5")


def test_classifier_free_guidance_on_a_masked_run(run, tmp_path, toy_e2e_corpus):
    from difflm.train import train

    slots = tmp_path / "masked_slots"
    config = tiny_config(
        f"e2e:{toy_e2e_corpus}", "model.kind=masked", "model.condition=slots", "train.steps=200", "train.lr=3e-3"
    )
    train(config, slots, progress=False)
    pipe = difflm.load(slots)

    def share(texts: list[str]) -> float:
        return sum("Chinese" in t.split() for t in texts) / len(texts)

    free = pipe.generate(32, steps=8, seed=0)
    guided = pipe.generate(32, steps=8, seed=0, condition="food=Chinese", cfg_scale=3.0)
    assert share(pipe.decode(guided.tokens)) >= share(pipe.decode(free.tokens)) + 0.3
    assert guided.nfe == 2 * free.nfe  # a guided call evaluates the conditional and the null rows
    conditional = pipe.generate(32, steps=8, seed=0, condition="food=Chinese")  # w = 1: one row per call
    assert conditional.nfe == free.nfe and share(pipe.decode(conditional.tokens)) > share(pipe.decode(free.tokens))
    argv = ["control", str(slots), "--cfg-scale", "3", "--n", "4", "--steps", "8", "--attribute"]
    assert main([*argv, "food=Chinese"]) == 0 and main([*argv, "food=Thai"]) == 2
    with pytest.raises(ValueError, match="trained without conditioning"):
        difflm.load(run).sample(2, condition="food=Chinese", cfg_scale=3.0)
