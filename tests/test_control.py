"""Gradient guidance and the classifier-free constraints: math, behaviour on a tiny run, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

import difflm
from difflm import control
from difflm.cli import main
from difflm.control import parse_constraint_args
from difflm.control.classifier_constraints import CLASSIFIER_GUIDANCE_STEPS
from difflm.diffusion.schedules import make_schedule
from difflm.model.denoiser import Prediction
from difflm.model.embedding import WordEmbedding
from difflm.sampling.grid import respaced_indices
from difflm.sampling.wrappers import CountedDenoiser
from difflm.text.vocab import Vocab
from difflm.train_classifier import ClassifierOptions, classifier_training, train_classifier

torch.set_num_threads(1)

# Behaviour runs: the same seeds and budget for guided and unguided sampling.
N, STEPS, SEED = 48, 25, 0


# --- guidance math on a stand-in denoiser -------------------------------------------------


class RoundingDenoiser:
    """f(x, t): x̂0 = x and the rounding logits x·EMBᵀ; counts its calls."""

    def __init__(self, vocab_size: int = 7, dim: int = 4) -> None:
        torch.manual_seed(0)
        self.embedding = WordEmbedding(vocab_size, dim)
        self.schedule = make_schedule("sqrt", 200)
        self.calls = 0

    def __call__(self, x, t, *, cond=None, self_cond=None) -> Prediction:
        self.calls += 1
        return Prediction(x0=x, logits=self.embedding.logits(x))


class Quadratic:
    """log p(c | x) = −½‖x − a‖²: its gradient is a − x."""

    def __init__(self, a: torch.Tensor, weight: float = 1.0) -> None:
        self.a, self.weight = a, weight

    def log_prob(self, x, t, denoiser):
        return -0.5 * ((x - self.a) ** 2).flatten(1).sum(-1)


class Linear:
    """log p(c | x) = Σ c·x: a constant gradient c."""

    def __init__(self, c: torch.Tensor) -> None:
        self.c, self.weight = c, 1.0

    def log_prob(self, x, t, denoiser):
        return (self.c * x).flatten(1).sum(-1)


def _state(seed: int = 1, shape=(2, 3, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def _guide(constraints, **settings):
    settings.setdefault("fluency_weight", 0.0)
    return control.GradientGuidance(RoundingDenoiser(), constraints, **settings)


def test_sgd_moves_x_by_step_size_times_gradient():
    x, a = _state()
    guide = _guide([Quadratic(a)], steps=1, step_size=0.3, optimizer="sgd")
    out = guide(x, t=0.5, mean=x, std=torch.tensor(1.0))
    torch.testing.assert_close(out, x + 0.3 * (a - x))


def test_sign_moves_each_coordinate_by_step_size():
    x, a = _state()
    out = _guide([Quadratic(a)], steps=1, step_size=0.1, optimizer="sign")(x, t=0.5, mean=x, std=torch.tensor(1.0))
    torch.testing.assert_close(out, x + 0.1 * (a - x).sign())


def test_adagrad_accumulates_over_inner_steps_and_resets_per_sampler_step():
    x, c = _state()
    guide = _guide([Linear(c)], steps=2, step_size=0.1, optimizer="adagrad")
    # G = g², then 2g²: steps η·sign(g) and η·sign(g)/√2; a fresh optimizer per step would give 2η·sign(g).
    expected = x + 0.1 * (1 + 1 / math.sqrt(2)) * c.sign()
    torch.testing.assert_close(guide(x, t=0.5, mean=x, std=torch.tensor(1.0)), expected)
    torch.testing.assert_close(guide(x, t=0.5, mean=x, std=torch.tensor(1.0)), expected)  # G starts afresh


def test_fluency_term_pulls_x_toward_the_step_mean():
    x, mean = _state()
    std, lam, eta = torch.tensor(0.5), 0.2, 0.01
    flat = Linear(torch.zeros_like(x))  # no constraint gradient: only −λ‖x − μ‖²/σ² acts
    out = _guide([flat], steps=1, step_size=eta, optimizer="sgd", fluency_weight=lam)(x, t=0.5, mean=mean, std=std)
    torch.testing.assert_close(out, x - eta * 2 * lam * (x - mean) / std**2)
    assert (out - mean).norm() < (x - mean).norm()
    # A deterministic step (σ = 0) reads σ² = fallback_variance instead of dividing by zero.
    out = _guide([flat], steps=1, step_size=eta, optimizer="sgd", fluency_weight=lam, fallback_variance=2.0)(
        x, t=0.5, mean=mean, std=torch.tensor(0.0)
    )
    torch.testing.assert_close(out, x - eta * 2 * lam * (x - mean) / 2.0)


def test_guidance_only_acts_when_active():
    x, a = _state()
    for active in ((0.5, 1.0), lambda t: t > 0.5):
        out = _guide([Quadratic(a)], active=active)(x, t=0.2, mean=x, std=torch.tensor(1.0))
        assert torch.equal(out, x)


def test_constraints_share_one_denoiser_evaluation_per_inner_step():
    vocab = Vocab(["a", "b", "c"])
    network = RoundingDenoiser()
    counted = CountedDenoiser(network)
    guide = control.GradientGuidance(counted, [control.Length(2, max_len=5), control.Keywords(["b"], vocab)], steps=3)
    x, _ = _state(shape=(2, 5, 4))
    guide(x, t=0.5, mean=x, std=torch.tensor(1.0))
    assert counted.per_sample(2) == 3 and network.calls == 3


@pytest.mark.parametrize(
    "settings",
    [{"steps": -1}, {"optimizer": "adam"}, {"step_size": 0.0}, {"fluency_weight": -1.0}, {"active": (0.9, 0.1)}],
)
def test_bad_guidance_settings_raise(settings):
    with pytest.raises(ValueError):
        _guide([Linear(torch.zeros(1))], **settings)


def test_constraint_log_probs_match_their_definitions():
    denoiser, vocab = RoundingDenoiser(), Vocab(["a", "b", "c"])
    x, _ = _state(shape=(2, 5, 4))
    p = denoiser(x, None).logits.double().softmax(-1)  # [B, L, V]
    end, pad, b = Vocab.END_ID, Vocab.PAD_ID, vocab.id_of("b")
    # Length(2): words at 1..2, END at 3, PAD at 4.
    expected = (1 - p[:, 1:3, end] - p[:, 1:3, pad]).log().sum(-1) + p[:, 3, end].log() + p[:, 4, pad].log()
    torch.testing.assert_close(control.Length(2, max_len=5).log_prob(x, 0.5, denoiser).double(), expected)
    expected = (1 - (1 - p[:, 1:, b]).prod(-1)).log()
    torch.testing.assert_close(control.Keywords(["b"], vocab).log_prob(x, 0.5, denoiser).double(), expected)
    infill = control.Infill("a ___", vocab, max_len=5)  # START a ___ END PAD
    known = [(0, Vocab.START_ID), (1, vocab.id_of("a")), (3, end), (4, pad)]
    expected = sum(p[:, i, w].log() for i, w in known)
    torch.testing.assert_close(infill.log_prob(x, 0.5, denoiser).double(), expected)


def test_infill_overwrite_draws_known_positions_from_q():
    denoiser, vocab = RoundingDenoiser(), Vocab(["a", "b", "c"])
    infill = control.Infill("a ___ c", vocab, max_len=6)
    x, _ = _state(shape=(2, 6, 4))
    out = infill.overwrite(x, 0.3, denoiser, torch.Generator().manual_seed(5))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    abar = float(denoiser.schedule.alpha_bar(0.3))
    target = denoiser.embedding(infill.ids)[None]
    known = infill.known[None, :, None]
    torch.testing.assert_close(out, torch.where(known, abar**0.5 * target + (1 - abar) ** 0.5 * noise, x))
    assert torch.equal(out[:, 2], x[:, 2])  # the blank is left alone


# --- bad constraints ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda v: control.Length(15, max_len=16), "15"),
        (lambda v: control.Length(0, max_len=16), "0"),
        (lambda v: control.Keywords(["Pizza"], v), "Pizza"),
        (lambda v: control.Keywords([], v), "at least one"),
        (lambda v: control.Infill("The ___ serves Pizza .", v, max_len=16), "Pizza"),
        (lambda v: control.Infill("___ " * 15, v, max_len=16), "max_len is 16"),
        (lambda v: control.Infill("Zizzi serves food", v, max_len=16), "no blank"),
        (lambda v: control.Length(3, max_len=16, weight=-1), "weight"),
        (lambda v: parse_constraint_args({"length": None}, v, 16), "no constraint"),
        (lambda v: parse_constraint_args({"length": "3"}, v, 16, ["keywords=2"]), "keywords"),
        (lambda v: parse_constraint_args({"length": "3"}, v, 16, ["length"]), "NAME=WEIGHT"),
        (lambda v: parse_constraint_args({"colour": "red"}, v, 16), "colour"),
    ],
)
def test_impossible_or_malformed_constraints_raise(build, message):
    vocab = Vocab(["Zizzi", "serves", "food", "The", "."])
    with pytest.raises(ValueError, match=message):
        build(vocab)


def test_weights_reach_the_constraints():
    vocab = Vocab(["Zizzi"])
    length, keywords = parse_constraint_args({"length": "3", "keywords": "Zizzi"}, vocab, 16, ["keywords=2.5"])
    assert (length.weight, keywords.weight, keywords.words) == (1.0, 2.5, ["Zizzi"])


# --- behaviour on a tiny trained run -------------------------------------------------------


@pytest.fixture(scope="module")
def pipe(tiny_run):
    return difflm.load(tiny_run)


@pytest.fixture(scope="module")
def unguided(pipe) -> list[list[str]]:
    """The same sampler, steps and seed as the guided runs, without guidance."""
    return [text.split() for text in pipe.sample(N, sampler="ddpm", steps=STEPS, seed=SEED)]


def _words(pipe, constraints) -> list[list[str]]:
    return _words_with(pipe, constraints, steps=STEPS)


def _words_with(pipe, constraints, **options) -> list[list[str]]:
    return [text.split() for text in pipe.sample(N, constraints=constraints, seed=SEED, **options)]


def _share(rows: list[list[str]], ok) -> float:
    return sum(map(ok, rows)) / len(rows)


def test_length_guidance_gives_the_exact_length(pipe, unguided):
    # The toy corpus has 8-10 words; 10 needs a two-word name and "city centre" (≈ 1 in 4).
    length = control.Length(10, max_len=pipe.config.data.max_len)
    guided, unguided = _share(_words(pipe, [length]), length.satisfied), _share(unguided, length.satisfied)
    print(f"length=10: guided {guided:.2f}, unguided {unguided:.2f}")
    assert guided >= 0.9 and guided >= unguided + 0.4, (guided, unguided)


def test_infilling_never_changes_the_given_words(pipe):
    infill = control.Infill("___ serves ___ food in the ___ ___ .", pipe.vocab, max_len=pipe.config.data.max_len)
    out = pipe.generate(N, constraints=[infill], steps=STEPS, seed=SEED)
    assert torch.equal(out.tokens[:, infill.known], infill.ids[infill.known].expand(N, -1))
    filled = _share([t.split() for t in pipe.decode(out.tokens)], infill.satisfied)
    print(f"infill: given words kept 1.00, all blanks filled {filled:.2f}")
    assert filled >= 0.9


def test_keyword_guidance_includes_the_keyword(pipe, unguided):
    keywords = control.Keywords(["Zizzi"], pipe.vocab)
    guided, unguided = _share(_words(pipe, [keywords]), keywords.satisfied), _share(unguided, keywords.satisfied)
    print(f"keyword Zizzi: guided {guided:.2f}, unguided {unguided:.2f}")
    assert guided >= 0.9 and guided >= unguided + 0.4, (guided, unguided)


def test_length_and_keywords_compose(pipe, unguided):
    length, keywords = control.Length(9, max_len=pipe.config.data.max_len), control.Keywords(["Zizzi"], pipe.vocab)

    def joint(words: list[str]) -> bool:
        return length.satisfied(words) and keywords.satisfied(words)

    shares = {
        name: _share(_words(pipe, cs), joint)
        for name, cs in [("length", [length]), ("keywords", [keywords]), ("both", [length, keywords])]
    }
    shares["none"] = _share(unguided, joint)
    print("length=9 and Zizzi:", shares)
    assert shares["both"] >= 0.9 and shares["both"] >= max(shares["length"], shares["keywords"]) + 0.2, shares


def test_attribute_classifier_guidance_expresses_the_value(slot_run):
    # A quick attribute classifier on the toy corpus's slots (the less noisy half of the diffusion).
    train_classifier(
        slot_run,
        "attribute",
        training=classifier_training(steps=100, batch_size=32, lr=6e-3, eval_every=100),
        progress=False,
        architecture={"hidden": 32, "layers": 1},
        options=ClassifierOptions(eval_rows=64, prior_rows=256, max_time=0.5),
    )
    slot_pipe = difflm.load(slot_run)
    italian = control.Attribute("food", "Italian", run=slot_run)  # judged on text: the value is a substring
    unguided = [text.split() for text in slot_pipe.sample(N, sampler="ddpm", steps=STEPS, seed=SEED)]
    out = slot_pipe.generate(N, constraints=[italian], steps=STEPS, seed=SEED)
    guided = _share([text.split() for text in slot_pipe.decode(out.tokens)], italian.satisfied)
    unguided = _share(unguided, italian.satisfied)
    print(f"food=Italian by the attribute classifier: guided {guided:.2f}, unguided {unguided:.2f}")
    assert guided >= unguided + 0.3, (guided, unguided)
    T = slot_pipe.config.diffusion.steps
    active = sum((s + 1) / T >= 0.05 for s in respaced_indices(T, STEPS)[1:])  # the default active=(0.05, 1)
    # K = CLASSIFIER_GUIDANCE_STEPS classifier calls per active step, no denoiser calls
    assert italian.calls == CLASSIFIER_GUIDANCE_STEPS * active and out.nfe == STEPS


def test_length_guidance_with_few_dpm_solver_steps(pipe):
    # The deterministic solver at 20 evaluations: guidance reads the step's posterior spread.
    length = control.Length(10, max_len=pipe.config.data.max_len)
    plain = [t.split() for t in pipe.sample(N, sampler="dpm++2m", steps=20, seed=SEED)]
    guided = _words_with(pipe, [length], sampler="dpm++2m", steps=20)
    guided, unguided = _share(guided, length.satisfied), _share(plain, length.satisfied)
    print(f"length=10 with dpm++2m, 20 steps: guided {guided:.2f}, unguided {unguided:.2f}")
    assert guided >= 0.9 and guided >= unguided + 0.4, (guided, unguided)


def test_generate_counts_guidance_evaluations(pipe):
    out = pipe.generate(
        2,
        constraints=[control.Length(9, max_len=pipe.config.data.max_len)],
        steps=10,
        seed=SEED,
        guidance={"steps": 2, "active": (0.0, 1.0)},
    )
    assert out.nfe == 10 + 2 * 9  # guidance runs after every sampler step but the last


# --- CLI ----------------------------------------------------------------------------------


def test_cli_control_runs(tiny_run, capsys):
    code = main(
        [
            "control",
            str(tiny_run),
            "--length",
            "9",
            "--keywords",
            "Zizzi",
            "--weight",
            "keywords=2",
            "--n",
            "3",
            "--steps",
            "10",
            "--guidance-steps",
            "2",
            "--optimizer",
            "adagrad",
            "--format",
            "jsonl",
        ]
    )
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 3 and set(rows[0]["satisfied"]) == {"length", "keywords"}
    assert "denoiser evaluations" in err


def test_cli_control_with_dpm_solver(tiny_run, capsys):
    code = main(
        [
            "control",
            str(tiny_run),
            "--length",
            "9",
            "--n",
            "3",
            "--sampler",
            "dpm++2m",
            "--steps",
            "6",
            "--grid",
            "logsnr",
            "--guidance-steps",
            "1",
            "--active",
            "0",
            "1",
            "--format",
            "jsonl",
        ]
    )
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 3
    assert f"{6 + 5} denoiser evaluations" in err  # 6 solver steps + 1 guidance step after each but the last


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--length", "15"], "15"),
        (["--keywords", "Pizza"], "Pizza"),
        (["--infill", "___ " * 15], "max_len"),
        (["--steps", "5"], "no constraint"),
        (["--length", "3", "--optimizer", "adam"], "adam"),
        (["--length", "3", "--weight", "length=heavy"], "heavy"),
    ],
)
def test_cli_control_bad_input_exits_2_with_one_line(tiny_run, capsys, argv, message):
    code = main(["control", str(tiny_run), "--n", "2", "--steps", "5", *argv])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
