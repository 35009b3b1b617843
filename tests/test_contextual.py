"""Contextual rounding: the decoder p(w_i | w_<i, memory) on a tiny run of the toy corpus.

It must write fluent rows, stay faithful to the latent it reads (guidance acts on the
latent), and keep exact constraints exact.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

import difflm
from difflm import control
from difflm.cli import main
from difflm.config import Config, RoundingConfig
from difflm.control.classifiers import ClassifierConfig, PosClassifier
from difflm.sampling.contextual import round_in_context
from tests.conftest import tiny_config

torch.set_num_threads(1)
TEMPLATE = re.compile(
    r"^(The Eagle|Alimentum|Blue Spice|Zizzi) serves (Italian|French|Chinese|English) food "
    r"in the (city centre|riverside) \.$"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory, toy_corpus):
    from difflm.train import train

    out = tmp_path_factory.mktemp("runs") / "contextual"
    train(
        tiny_config(f"lines:{toy_corpus}", "train.steps=300", "train.lr=3e-3", "rounding.kind=contextual"),
        out,
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def pipe(run):
    return difflm.load(run)


def _latents(pipe, texts: list[str]) -> torch.Tensor:
    """x0 = EMB(w) of given sentences: latents whose words are known."""
    ids, _ = pipe.vocab.encode_batch([t.split() for t in texts], pipe.config.data.max_len)
    return pipe.model.embedding(ids).detach()


def _decode(pipe, x0: torch.Tensor, seed: int = 0) -> list[str]:
    # The reading guided sampling uses: guidance acts on the latent, so there the decoder must
    # write what the latent says (unconditional sampling reads at t_sample, leaning on context).
    tokens, _ = round_in_context(
        pipe.model, x0, t_d=pipe.config.rounding.t_constrained, generator=torch.Generator().manual_seed(seed)
    )
    return pipe.decode(tokens)


def test_contextual_rounding_writes_well_formed_sentences(pipe):
    texts = pipe.sample(32, steps=20, seed=0)
    share = sum(bool(TEMPLATE.match(t)) for t in texts) / len(texts)
    print(f"template share with contextual rounding: {share:.2f}")
    assert share >= 0.9, texts[:5]


def test_the_decoder_follows_the_latent_it_reads(pipe):
    truth = [
        "Zizzi serves French food in the riverside .",
        "The Eagle serves Chinese food in the city centre .",
        "Alimentum serves English food in the riverside .",
        "Blue Spice serves Italian food in the city centre .",
    ]
    x0 = _latents(pipe, truth)
    assert _decode(pipe, x0) == truth  # the latent's slot values survive decoding
    swapped = _decode(pipe, x0.roll(1, 0))  # another row's latent: that row's sentence
    assert swapped == truth[-1:] + truth[:-1]
    shuffled = _decode(pipe, x0[:, torch.randperm(x0.shape[1], generator=torch.Generator().manual_seed(1))])
    assert shuffled != truth  # a memory with its positions shuffled says something else


def test_exact_constraints_hold_through_the_decoder(pipe):
    L = pipe.config.data.max_len
    length = control.Length(9, max_len=L)
    texts = pipe.sample(16, steps=20, seed=1, constraints=[length])
    assert all(len(t.split()) == 9 for t in texts), texts
    infill = control.Infill("Zizzi serves ___ food in the ___ ___ .", pipe.vocab, max_len=L)
    texts = pipe.sample(16, steps=20, seed=2, constraints=[infill])
    assert all(infill.satisfied(t.split()) for t in texts), texts


def test_allowed_words_of_length_and_infill(pipe):
    V, L = len(pipe.vocab), pipe.config.data.max_len
    allowed = control.Length(3, max_len=L).allowed_words(V)
    assert allowed.shape == (L, V)
    end, pad = pipe.vocab.END_ID, pipe.vocab.PAD_ID
    assert not allowed[1:4, [end, pad]].any() and allowed[4].nonzero().flatten().tolist() == [end]
    assert allowed[5:, pad].all() and allowed[5:].sum() == L - 5
    infill = control.Infill("Zizzi ___ .", pipe.vocab, max_len=L).allowed_words(V)
    assert infill[1].nonzero().flatten().tolist() == [pipe.vocab.id_of("Zizzi")] and infill[2].sum() == V - 3


def test_rounding_option_and_errors(pipe, tiny_run):
    factorized = pipe.generate(4, steps=10, seed=0, rounding="factorized")
    contextual = pipe.generate(4, steps=10, seed=0)
    assert torch.equal(factorized.x0, contextual.x0)  # the same latent, read two ways
    assert contextual.nfe == factorized.nfe + 1  # one reading of x_{t_d} for the memory
    with pytest.raises(ValueError, match="no contextual rounding decoder"):
        difflm.load(tiny_run).generate(2, steps=4, rounding="contextual")
    with pytest.raises(ValueError, match="rounding must be"):
        pipe.generate(2, steps=4, rounding="beam")
    assert RoundingConfig().kind == "contextual"  # the default recipe


def test_runs_saved_before_rounding_existed_keep_the_factorized_readout(tiny_run, tmp_path):
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tiny_run, old)
    config = json.loads((old / "config.json").read_text())
    del config["rounding"]  # as every run saved before contextual rounding
    (old / "config.json").write_text(json.dumps(config))
    pipe = difflm.load(old)
    assert pipe.config.rounding.kind == "factorized" and pipe.model.decoder is None
    assert len(pipe.sample(2, steps=4)) == 2


def test_the_decoder_writes_required_words_before_it_ends(pipe):
    zizzi = control.Keywords(["Zizzi", "French"], pipe.vocab)
    texts = pipe.sample(16, steps=20, seed=3, constraints=[zizzi, control.Length(9, max_len=pipe.config.data.max_len)])
    assert all(zizzi.satisfied(t.split()) and len(t.split()) == 9 for t in texts), texts


def _decoder_inputs(pipe):
    x0 = _latents(
        pipe, ["Zizzi serves French food in the riverside .", "Alimentum serves Chinese food in the city centre ."]
    )
    t = torch.full((2,), 0.2)
    return pipe.model.memory(x0, t).detach(), t


@pytest.mark.parametrize("forced", [False, True])
def test_the_decoder_scores_the_words_it_writes(pipe, forced):
    """The score is the decoder's own log-probability of the words, a forced one included: a
    word the constraint puts where it does not fit costs its row (what reads rank by)."""
    decoder = pipe.model.decoder
    memory, t = _decoder_inputs(pipe)
    allowed = None
    if forced:  # "food" as the second word, where neither sentence has it
        allowed = torch.ones(memory.shape[1], len(pipe.vocab), dtype=torch.bool)
        allowed[2] = False
        allowed[2, pipe.vocab.id_of("food")] = True
    ids, log_prob = decoder.generate(memory, t, allowed=allowed)
    if forced:
        assert (ids[:, 2] == pipe.vocab.id_of("food")).all()
    with torch.no_grad():
        logits, _ = decoder(ids[:, :-1], decoder.read(memory, t), None, start=0)
    vocab = pipe.vocab
    logits[..., [vocab.START_ID, vocab.PAD_ID, vocab.UNK_ID]] = -torch.inf  # never written by _write
    chosen = logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    written = ids[:, 1:] != vocab.PAD_ID
    expected = chosen.masked_fill(~written, 0).sum(1) / written.sum(1)  # teacher forcing, END included
    assert torch.allclose(log_prob, expected, atol=1e-4), (log_prob, expected)


def test_the_decoder_never_writes_unk_unless_a_constraint_leaves_only_it(pipe, monkeypatch):
    decoder = pipe.model.decoder
    memory, t = _decoder_inputs(pipe)
    forward = decoder.forward

    def unk_first(*args, **kwargs):  # a decoder that would write <unk> everywhere
        logits, cache = forward(*args, **kwargs)
        logits[..., pipe.vocab.UNK_ID] += 1e4
        return logits, cache

    monkeypatch.setattr(decoder, "forward", unk_first)
    ids, _ = decoder.generate(memory, t)
    assert not (ids == pipe.vocab.UNK_ID).any() and (ids == pipe.vocab.END_ID).sum() == 2
    allowed = torch.ones(memory.shape[1], len(pipe.vocab), dtype=torch.bool)
    allowed[2] = False
    allowed[2, pipe.vocab.UNK_ID] = True  # an unknown word given at position 2
    ids, _ = decoder.generate(memory, t, allowed=allowed)
    assert (ids[:, 2] == pipe.vocab.UNK_ID).all() and (ids[:, 3:] != pipe.vocab.UNK_ID).all()


def test_a_rewrite_for_a_missing_keyword_keeps_the_keywords_already_written(pipe, monkeypatch):
    decoder = pipe.model.decoder
    memory, t = _decoder_inputs(pipe)
    a, b, c = (pipe.vocab.id_of(w) for w in ("Zizzi", "French", "Alimentum"))
    forward, passes = decoder.forward, []

    def steered(ids, m, cache=None, *, start=0):  # pass 1 opens with a and never writes b; pass 2 would open with c
        logits, cache = forward(ids, m, cache, start=start)
        passes.extend([start] if start == 0 else [])
        if start == 0:
            logits[..., a if len(passes) == 1 else c] += 1e4
        if len(passes) == 1:
            logits[..., b] -= 1e4
        return logits, cache

    monkeypatch.setattr(decoder, "forward", steered)
    ids, _ = decoder.generate(memory, t, required=torch.tensor([a, b]))
    assert len(passes) == 2  # the rewrite ran
    assert all(a in row and b in row for row in ids.tolist()), [pipe.vocab.decode(row) for row in ids.tolist()]


def test_best_of_keeps_the_draw_the_decoder_finds_most_probable(pipe, monkeypatch):
    scores = []
    round_in_context = pipe._round_in_context

    def recorded(*args, **kwargs):
        tokens, log_prob = round_in_context(*args, **kwargs)
        scores.append(log_prob)
        return tokens, log_prob

    monkeypatch.setattr(pipe, "_round_in_context", recorded)
    pool = pipe.generate(18, steps=10, seed=4)  # the same draws: best_of=3 draws 3 rows for each kept one
    best = pipe.generate(6, steps=10, seed=4, best_of=3)
    assert torch.equal(scores[0], scores[1])
    picked = scores[0].view(6, 3).argmax(1) + torch.arange(0, 18, 3)
    assert torch.equal(best.tokens, pool.tokens[picked]) and torch.equal(best.x0, pool.x0[picked])
    one = pipe.generate(6, steps=10, seed=4)
    assert best.nfe == 3 * one.nfe  # k times the cost, counted
    # The run's rounding.best_of is the default, except under a classifier's guidance.
    monkeypatch.setattr(pipe, "config", replace(pipe.config, rounding=replace(pipe.config.rounding, best_of=3)))
    assert torch.equal(pipe.generate(6, steps=10, seed=4).tokens, best.tokens)
    assert pipe.generate(6, steps=10, seed=4, rounding="factorized").nfe == one.nfe - 1  # no decoder, no draws
    shape = ClassifierConfig("pos", pipe.config.model.embed_dim, pipe.config.data.max_len, PosClassifier.tag_set())
    pos = control.POS("DET NOUN", run=PosClassifier(shape).eval(), judge="grammar")  # untrained: only the count matters
    assert (
        pipe.generate(2, steps=4, constraints=[pos]).nfe == pipe.generate(2, steps=4, constraints=[pos], best_of=1).nfe
    )
    with pytest.raises(ValueError, match="best_of must be ≥ 1"):
        pipe.generate(2, steps=4, best_of=0)
    with pytest.raises(ValueError, match="only with contextual rounding"):
        pipe.generate(2, steps=4, best_of=2, rounding="factorized")
    with pytest.raises(ValueError, match="only with rounding.kind=contextual"):
        Config().with_overrides(["rounding.kind=factorized", "rounding.best_of=2"])


def test_a_classifier_reads_at_t_constrained_and_fixed_words_at_t_sample(pipe, monkeypatch):
    seen = []

    def recorded(*args, **kwargs):
        seen.append(kwargs["t_d"])
        return round_in_context(*args, **kwargs)

    monkeypatch.setattr("difflm.pipeline.round_in_context", recorded)
    shape = ClassifierConfig("pos", pipe.config.model.embed_dim, pipe.config.data.max_len, PosClassifier.tag_set())
    pos = control.POS("DET NOUN", run=PosClassifier(shape).eval(), judge="grammar")
    length = control.Length(4, max_len=pipe.config.data.max_len)
    for constraints in ([], [length], [pos]):
        pipe.generate(2, steps=4, constraints=constraints)
    rc = pipe.config.rounding
    assert rc.t_sample != rc.t_constrained
    assert seen == [rc.t_sample, rc.t_sample, rc.t_constrained]


def test_reads_keep_the_reading_the_decoder_finds_most_probable(pipe, monkeypatch):
    x0 = _latents(
        pipe, ["Zizzi serves French food in the riverside .", "Alimentum serves Chinese food in the city centre ."]
    )

    def read(rows: torch.Tensor, reads: int) -> tuple[torch.Tensor, torch.Tensor]:
        return round_in_context(pipe.model, rows, t_d=0.8, generator=torch.Generator().manual_seed(3), reads=reads)

    pool, pool_scores = read(x0.repeat_interleave(4, 0), 1)  # the same draws of z: row i's readings are 4i … 4i + 3
    ids, scores = read(x0, 4)
    picked = pool_scores.view(2, 4).argmax(1) + torch.tensor([0, 4])
    assert torch.equal(ids, pool[picked]) and torch.equal(scores, pool_scores[picked])
    assert len({tuple(row) for row in pool.tolist()}) > 2  # at t_d = 0.8 the readings differ: the pick has a choice
    with pytest.raises(ValueError, match="reads must be ≥ 1"):
        read(x0, 0)
    # In the pipeline: the run's rounding.reads is the default, a classifier's guidance included;
    # each reading is a memory evaluation (two on a self-conditioned run), counted in nfe.
    one = pipe.generate(4, steps=6, seed=2)
    three = pipe.generate(4, steps=6, seed=2, reads=3)
    memory = 2 if pipe.model.self_conditioning else 1
    assert three.nfe == one.nfe + 2 * memory
    monkeypatch.setattr(pipe, "config", replace(pipe.config, rounding=replace(pipe.config.rounding, reads=3)))
    assert torch.equal(pipe.generate(4, steps=6, seed=2).tokens, three.tokens)
    shape = ClassifierConfig("pos", pipe.config.model.embed_dim, pipe.config.data.max_len, PosClassifier.tag_set())
    pos = control.POS("DET NOUN", run=PosClassifier(shape).eval(), judge="grammar")  # untrained: only the count matters
    assert pipe.generate(2, steps=4, constraints=[pos]).nfe == pipe.generate(2, steps=4, constraints=[pos], reads=3).nfe
    assert pipe.generate(4, steps=6, seed=2, rounding="factorized").nfe == one.nfe - memory  # no decoder, no readings
    with pytest.raises(ValueError, match="reads must be ≥ 1, and > 1 only with contextual"):
        pipe.generate(2, steps=4, reads=2, rounding="factorized")
    with pytest.raises(ValueError, match="rounding.reads must be ≥ 1"):
        Config().with_overrides(["rounding.reads=0"])


def test_cli_samples_with_either_rounding(run, capsys):
    assert main(["sample", str(run), "--n", "2", "--steps", "5", "--rounding", "factorized"]) == 0
    assert main(["sample", str(run), "--n", "2", "--steps", "5"]) == 0
    assert capsys.readouterr().out.count("\n") == 4


def test_a_contextual_run_can_teach_a_one_step_student(run, tmp_path):
    from difflm.config import Config
    from difflm.train import Trainer

    config = Config.load_run(run).with_overrides(
        ["model.generator=consistency", f"train.teacher={run}", "train.steps=2"]
    )
    student = Trainer(config, tmp_path / "cd", progress=False)
    assert student.model.decoder is None  # the generators keep their own readout
    teacher = difflm.load(run).model
    for name, weight in student.model.named_parameters():
        assert torch.equal(weight, teacher.get_parameter(name)), name
    student.run()
