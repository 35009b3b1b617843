"""Discrete diffusion runs, masked and uniform, through training, the pipeline and the CLI:
every sampler, the exact constraints (infilling, length, keywords), classifier-free guidance,
and what a discrete run refuses."""

from __future__ import annotations

import json
import re

import pytest
import torch

import difflm
from difflm import control
from difflm.cli import main
from difflm.control.classifiers import AttributeClassifier, ClassifierConfig, PosClassifier
from difflm.sampling import TOKEN_DEFAULTS, TOKEN_SAMPLERS
from difflm.sampling.contextual import round_in_context
from difflm.train_classifier import ClassifierOptions, classifier_training, train_classifier
from tests.conftest import tiny_config

torch.set_num_threads(1)
KINDS = ("masked", "uniform")


def samplers(pipe: difflm.Pipeline) -> list[str]:
    return sorted(TOKEN_SAMPLERS[pipe.config.model.kind])


@pytest.fixture(scope="module", params=KINDS)
def run(request, tmp_path_factory, toy_corpus):
    from difflm.train import train

    out = tmp_path_factory.mktemp("runs") / request.param
    config = tiny_config(f"lines:{toy_corpus}", f"model.kind={request.param}", "train.steps=150", "train.lr=3e-3")
    train(config, out, progress=False)
    return out


def test_a_discrete_run_trains_and_samples_through_the_pipeline(run):
    pipe = difflm.load(run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["split"] == "train"]
    assert losses[-1] < 0.7 * losses[0]
    for sampler in samplers(pipe):
        out = pipe.generate(6, sampler=sampler, steps=8, seed=0)
        assert out.tokens.shape == (6, 16) and 1 <= out.nfe <= 8
        assert (out.tokens != pipe.model.mask_id).all()
    assert pipe.sample(3, steps=8, seed=0) == pipe.sample(3, steps=8, seed=0)  # a seed reproduces
    assert pipe.default_sampler == TOKEN_DEFAULTS[pipe.config.model.kind][0]


def test_a_discrete_run_can_be_watched_step_by_step(run):
    """The step callback sees every call of every length group: all rows, the fixed words
    kept, and under masking blanks that only ever get fewer, and x̂0 as one-hot words."""
    pipe = difflm.load(run)
    masked = pipe.config.model.kind == "masked"
    infill = control.Infill("Zizzi serves ___ food ___ .", pipe.vocab, max_len=16)
    seen: list = []
    out = pipe.generate(5, steps=6, seed=0, constraints=[infill], callback=seen.append)
    assert len(seen) == out.nfe and [info.step for info in seen] == list(range(len(seen)))
    V = len(pipe.vocab)
    for info in seen:
        assert info.x.shape == (5, 16) and info.x0.shape == (5, 16, V)
        assert (info.x0.sum(-1) == 1).all()
        words = info.x0.argmax(-1)
        assert (words[:, [1, 2, 4]] == torch.tensor(pipe.vocab.encode(["Zizzi", "serves", "food"]))).all()
    blanks = [int((info.x == pipe.model.mask_id).sum()) for info in seen]
    assert blanks == sorted(blanks, reverse=True) and (blanks[0] > 0 if masked else True)
    assert pipe.generate(5, steps=6, seed=0, constraints=[infill]).tokens.equal(out.tokens)  # watching changes nothing


def test_infilling_and_length_are_exact_on_a_discrete_run(run):
    pipe = difflm.load(run)
    infill = control.Infill("Zizzi serves ___ food in the ___ .", pipe.vocab, max_len=16)
    for sampler in samplers(pipe):
        texts = pipe.sample(8, sampler=sampler, steps=8, seed=0, constraints=[infill])
        kept = [t.split()[:2] + t.split()[3:6] for t in texts]
        assert all(k == ["Zizzi", "serves", "food", "in", "the"] for k in kept), texts
        length = control.Length(4, max_len=16)
        assert all(len(t.split()) == 4 for t in pipe.sample(8, sampler=sampler, steps=8, constraints=[length]))
    unguided = pipe.sample(16, steps=8, seed=0)
    assert sum(len(t.split()) == 4 for t in unguided) < 16  # the constraint, not the model, makes it exact


def test_keywords_are_exact_on_a_discrete_run(run):
    pipe = difflm.load(run)
    keywords = control.Keywords(["Zizzi", "French"], pipe.vocab)
    for sampler in samplers(pipe):
        out = pipe.generate(8, sampler=sampler, steps=8, seed=0, constraints=[keywords])
        texts = pipe.decode(out.tokens)
        assert all({"Zizzi", "French"} <= set(t.split()) for t in texts), texts
    unguided = pipe.sample(16, steps=8, seed=0)
    assert sum({"Zizzi", "French"} <= set(t.split()) for t in unguided) < 16
    with pytest.raises(ValueError, match="do not fit the masked positions"):
        pipe.sample(2, constraints=[keywords, control.Length(1, max_len=16)])


def test_a_discrete_run_refuses_what_it_cannot_do(run, capsys):
    pipe = difflm.load(run)
    kind = pipe.config.model.kind
    shape = ClassifierConfig("pos", 16, 16, PosClassifier.tag_set())
    with pytest.raises(ValueError, match="POS's classifier reads a continuous run's noisy latents"):
        pipe.sample(2, constraints=[control.POS("PROPN VERB", run=PosClassifier(shape), judge="text")])
    with pytest.raises(ValueError, match="apply to continuous runs"):
        pipe.sample(2, eta=0.5)
    for argv, message in (
        (["sample", str(run), "--sampler", "ddim"], f"unknown {kind} sampler 'ddim'"),
        (["sample", str(run), "--sc-guidance", "2"], "apply to continuous runs"),
    ):
        capsys.readouterr()
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="model.kind must be one of"):
        tiny_config("grammar", "model.kind=absorbing")
    with pytest.raises(ValueError, match="diffusion.sweep needs model.kind=diffusion"):
        tiny_config("grammar", f"model.kind={kind}", "diffusion.sweep=0.5")


@pytest.fixture(scope="module")
def slots(run, tmp_path_factory, toy_e2e_corpus):
    """A run of the same kind on the toy corpus with slot values, conditioned on them."""
    from difflm.train import train

    kind = difflm.load(run).config.model.kind
    out = tmp_path_factory.mktemp("runs") / f"{kind}_slots"
    config = tiny_config(
        f"e2e:{toy_e2e_corpus}", f"model.kind={kind}", "model.condition=slots", "train.steps=200", "train.lr=3e-3"
    )
    train(config, out, progress=False)
    return out


def share(texts: list[str], word: str = "Chinese") -> float:
    return sum(word in t.split() for t in texts) / len(texts)


def test_classifier_free_guidance_on_a_discrete_run(run, slots):
    pipe = difflm.load(slots)

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


def test_classifier_guidance_on_a_discrete_run(slots):
    """An attribute classifier of the run's noised rows steers it (first-order discrete
    guidance), without the condition; a continuous run's classifier is refused by name."""
    train_classifier(
        slots,
        "attribute",
        training=classifier_training(steps=150, batch_size=32, lr=6e-3, eval_every=150),
        progress=False,
        architecture={"hidden": 32, "layers": 1},
        options=ClassifierOptions(eval_rows=64, prior_rows=256),
    )
    pipe = difflm.load(slots)
    chinese = control.Attribute("food", "Chinese", run=slots, weight=10.0)
    free = pipe.decode(pipe.generate(32, steps=8, seed=0).tokens)
    out = pipe.generate(32, steps=8, seed=0, constraints=[chinese])
    guided = pipe.decode(out.tokens)
    assert chinese.calls == pytest.approx(out.nfe)  # one batched classifier call per denoiser call
    assert share(guided) >= share(free) + 0.3, (share(guided), share(free))
    assert all(chinese.satisfied(t.split()) == ("Chinese" in t.split()) for t in guided)
    latent = AttributeClassifier(ClassifierConfig("attribute", 16, 16, ("food=Chinese",)))
    with pytest.raises(ValueError, match="reads a continuous run's noisy latents: train one on this"):
        pipe.sample(2, constraints=[control.Attribute("food", "Chinese", run=latent)])


def test_guidance_reads_a_length_group_at_the_classifiers_width():
    """A group of short rows (cut to their width under length anchors) is read padded back to
    the classifier's width, as its training rows were: a span past the group's END is a target
    the rows miss, not an error."""
    from difflm.control.classifiers import TreeClassifier
    from difflm.control.discrete import GuidedTokenNetwork
    from difflm.sampling.tokens import TokenNetwork

    V = 12
    tree = TreeClassifier(ClassifierConfig("tree", 8, 16, ("<none>", "NP"), tokens=V + 1))
    span = control.Span(0, 8, "NP", run=tree)
    network = GuidedTokenNetwork(TokenNetwork(lambda z, t: torch.zeros(*z.shape, V)), [span], V + 1, rows=2)
    z = torch.tensor([[1, 5, 6, 2, 0], [1, 7, V, 2, 0]])  # two rows of width 5: START, words, END
    tilted = network(z, 1.0)
    assert tilted.shape == (2, 5, V) and bool(torch.isfinite(tilted).all())


@pytest.fixture(scope="module")
def reading(run, tmp_path_factory, toy_corpus):
    """A run of the same kind with contextual rounding (`rounding.discrete`)."""
    from difflm.train import train

    kind = difflm.load(run).config.model.kind
    out = tmp_path_factory.mktemp("runs") / f"{kind}_read"
    config = tiny_config(
        f"lines:{toy_corpus}",
        f"model.kind={kind}",
        "train.steps=150",
        "train.lr=3e-3",
        "rounding.kind=contextual",
        "rounding.discrete=true",
    )
    train(config, out, progress=False)
    return out


TOY = re.compile(  # the toy corpus's one sentence shape (`write_toy_corpus`)
    r"(The Eagle|Alimentum|Blue Spice|Zizzi) serves (Italian|French|Chinese|English) food "
    r"in the (city centre|riverside) \."
)


def test_a_discrete_run_reads_its_words_in_context(run, reading):
    plain, pipe = difflm.load(run), difflm.load(reading)
    assert plain.model.decoder is None  # off by default: discrete runs saved before it load as they were
    with pytest.raises(ValueError, match="rounding.discrete=true"):
        plain.generate(2, steps=4, rounding="contextual")
    rows = [json.loads(line) for line in (reading / "metrics.jsonl").read_text().splitlines()]
    assert {"contextual", "loss"} <= set(rows[-1])  # the decoder's term is trained and logged
    for sampler in samplers(pipe):
        own = pipe.generate(16, sampler=sampler, steps=8, seed=0, rounding="factorized")
        read = pipe.generate(16, sampler=sampler, steps=8, seed=0)
        assert read.nfe == own.nfe + 1  # one reading: one memory evaluation per row
        assert pipe.generate(16, sampler=sampler, steps=8, seed=0, reads=3).nfe == own.nfe + 3
        well_formed = [sum(bool(TOY.fullmatch(t)) for t in pipe.decode(out.tokens)) for out in (own, read)]
        assert well_formed[1] >= max(12, well_formed[0]), (sampler, well_formed)
    with pytest.raises(ValueError, match="reads must be ≥ 1"):
        pipe.generate(2, steps=4, reads=0)
    # tiny.yaml reads factorized: the option needs the contextual kind, and a masked or uniform run.
    for wrong in (["model.kind=uniform"], ["rounding.kind=contextual"]):
        with pytest.raises(ValueError, match="rounding.discrete gives a masked or uniform run"):
            tiny_config("grammar", *wrong, "rounding.discrete=true")
    with pytest.raises(ValueError, match="only with contextual rounding"):
        pipe.generate(2, steps=4, reads=2, rounding="factorized")


def test_the_discrete_decoder_follows_the_row_it_reads(reading):
    """Faithfulness: clean rows of known sentences are written back, swapped rows swap the
    sentences, and R readings keep the most probable of the same R draws."""
    pipe = difflm.load(reading)
    texts = ["Zizzi serves French food in the riverside .", "Alimentum serves Chinese food in the city centre ."]
    rows, _ = pipe.vocab.encode_batch([t.split() for t in texts], 16)

    def read(tokens: torch.Tensor, t_d: float, reads: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(3)
        return round_in_context(pipe.model, tokens, t_d=t_d, generator=generator, reads=reads)

    ids, _ = read(rows, 0.0)
    assert pipe.decode(ids) == texts
    assert pipe.decode(read(rows.flip(0), 0.0)[0]) == texts[::-1]
    pool, pool_scores = read(rows.repeat_interleave(4, 0), 0.5)
    ids, scores = read(rows, 0.5, reads=4)
    picked = pool_scores.view(2, 4).argmax(1) + torch.tensor([0, 4])
    assert torch.equal(ids, pool[picked]) and torch.equal(scores, pool_scores[picked])


def test_exact_constraints_hold_through_the_discrete_decoder(reading):
    pipe = difflm.load(reading)
    infill = control.Infill("Zizzi serves ___ food in the ___ .", pipe.vocab, max_len=16)
    keywords = control.Keywords(["Alimentum", "English"], pipe.vocab)
    for sampler in samplers(pipe):
        for text in pipe.sample(8, sampler=sampler, steps=8, seed=0, constraints=[infill]):
            words = text.split()
            assert words[:2] + words[3:6] == ["Zizzi", "serves", "food", "in", "the"] and words[-1] == ".", text
        texts = pipe.sample(8, sampler=sampler, steps=8, constraints=[control.Length(4, max_len=16)])
        assert all(len(t.split()) == 4 for t in texts), texts
        texts = pipe.sample(8, sampler=sampler, steps=8, seed=0, constraints=[keywords])
        assert all({"Alimentum", "English"} <= set(t.split()) for t in texts), texts


def test_classifier_free_guidance_through_the_discrete_decoder(run, tmp_path, toy_e2e_corpus):
    """The decoder reads the memory of the guided branch, so the condition survives the reading."""
    from difflm.train import train

    kind = difflm.load(run).config.model.kind
    config = tiny_config(
        f"e2e:{toy_e2e_corpus}",
        f"model.kind={kind}",
        "model.condition=slots",
        "train.steps=200",
        "train.lr=3e-3",
        "rounding.kind=contextual",
        "rounding.discrete=true",
    )
    train(config, tmp_path / "run", progress=False)
    pipe = difflm.load(tmp_path / "run")
    guided = pipe.sample(32, steps=8, seed=0, condition="food=Chinese", cfg_scale=3.0, reads=2)
    unguided = pipe.sample(32, steps=8, seed=0, reads=2)
    assert share(guided) >= 0.8 and share(guided) > share(unguided) + 0.3, (share(guided), share(unguided))
