"""Classifier-free guidance: condition dropout, the guided prediction, sampling on a tiny conditioned run, CLI."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import difflm
from difflm import control
from difflm.cli import main
from difflm.config import Config, DiffusionConfig, ModelConfig
from difflm.diffusion.schedules import make_schedule
from difflm.model.denoiser import Denoiser
from difflm.objectives import Batch
from difflm.objectives.diffusion import e2e_loss
from difflm.run import CONDITIONS_FILE
from difflm.sampling.wrappers import CountedDenoiser
from difflm.text.dataset import prepare_data
from difflm.text.slots import SlotLabels, multi_hot
from tests.conftest import tiny_config

torch.set_num_threads(1)

N, STEPS, SEED = 48, 25, 0
P = 5  # condition labels of the stand-in denoisers


def _denoiser(predict: str = "logits", self_condition: bool = False, num_conditions: int = P) -> Denoiser:
    torch.manual_seed(0)
    config = ModelConfig(
        embed_dim=8,
        hidden=32,
        layers=1,
        heads=2,
        dropout=0.0,
        predict=predict,
        self_condition=self_condition,
        condition="slots" if num_conditions else "none",
    )
    return Denoiser(config, 11, 6, make_schedule("sqrt", 100), num_conditions).eval()


class Spy:
    """The denoiser, recording the cond of every call."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser, self.conds = denoiser, []

    def __call__(self, x_t, t, *, cond=None, self_cond=None):
        self.conds.append(cond)
        return self.denoiser(x_t, t, cond=cond, self_cond=self_cond)

    def __getattr__(self, name):
        return getattr(self.denoiser, name)


# --- training: condition dropout ------------------------------------------------------------


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_condition_dropout_replaces_a_share_p_of_rows_by_the_null_condition(p):
    spy = Spy(_denoiser(self_condition=True))
    B = 400
    cond = torch.rand(B, P, generator=torch.Generator().manual_seed(1)) + 0.1  # distinct, non-null rows
    ids = torch.randint(0, 11, (B, 6))
    e2e_loss(
        spy,
        Batch(ids, cond),
        Config(diffusion=DiffusionConfig(steps=100, cond_drop=p, self_cond_prob=0.5)),
        generator=torch.Generator().manual_seed(0),
    )
    seen = spy.conds[-1]  # the main pass (the first, if any, is the self-conditioning pass)
    dropped = (seen == 0).all(1)
    assert torch.equal(seen[~dropped], cond[~dropped])  # kept rows see their own condition, unchanged
    share = dropped.float().mean().item()
    assert share == p if p in (0.0, 1.0) else abs(share - p) < 0.07, share
    if p > 0:  # the self-conditioning pass sees its rows' conditions as dropped for the main pass
        first = spy.conds[0]
        assert len(spy.conds) == 2 and 0 < first.shape[0] < B
        assert set(map(tuple, first.tolist())) <= set(map(tuple, seen.tolist()))


def test_null_condition_is_exactly_the_unconditioned_call():
    model = _denoiser()
    x, t = torch.randn(3, 6, 8), torch.rand(3)
    with torch.no_grad():
        assert torch.equal(model(x, t, cond=torch.zeros(3, P)).logits, model(x, t).logits)
        assert not torch.equal(model(x, t, cond=torch.eye(P)[:3]).logits, model(x, t).logits)


def test_unconditioned_models_keep_their_parameters():
    plain, conditioned = _denoiser(num_conditions=0), _denoiser()
    assert set(conditioned.state_dict()) - set(plain.state_dict()) == {"cond_proj.weight"}
    with pytest.raises(ValueError, match="without a conditioning"):
        plain(torch.randn(1, 6, 8), torch.rand(1), cond=torch.ones(1, P))
    with pytest.raises(ValueError, match=r"\[1, 5\]"):
        conditioned(torch.randn(1, 6, 8), torch.rand(1), cond=torch.ones(1, 4))


def test_slot_labels_round_trip_as_json_and_name_unknown_pairs(tmp_path):
    labels = SlotLabels.build([{"food": "Italian", "area": "riverside"}, {"food": "French"}])
    assert labels.labels == ("area=riverside", "food=French", "food=Italian")
    labels.save(tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text())["labels"] == list(labels.labels)
    assert SlotLabels.load(tmp_path / "c.json").labels == labels.labels
    assert labels.encode([{"food": "Italian"}]).tolist() == [[0.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match="'food=Pizza', 'area=moon'"):
        labels.encode([{"food": "Pizza", "area": "moon"}])
    assert multi_hot([{"food": "Pizza"}], labels.labels, strict=False).sum() == 0
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a difflm slot label file"):
        SlotLabels.load(tmp_path / "bad.json")


def test_condition_needs_a_corpus_with_slots(toy_corpus, toy_e2e_corpus):
    with pytest.raises(ValueError, match="no slot annotations"):
        prepare_data(tiny_config(f"lines:{toy_corpus}", "model.condition=slots"))
    data = prepare_data(tiny_config(f"e2e:{toy_e2e_corpus}", "model.condition=slots"))
    assert len(data.conditions) == 10 and data.train_cond.shape == (len(data.train), 10)
    assert (data.train_cond.sum(1) == 3).all()  # name, food and area of every sentence
    with pytest.raises(ValueError, match="model.condition"):
        Config.from_dict({"model": {"condition": "topic"}})
    # A conditioned causal LM is the FT baseline (tests/test_cgmh.py); one-step generators are not conditioned.
    assert Config.from_dict({"model": {"condition": "slots", "kind": "autoregressive"}}).model.condition == "slots"
    assert Config.from_dict({"model": {}}).model.condition == "none"  # configs written before conditioning


# --- the guided prediction ------------------------------------------------------------------


@pytest.mark.parametrize("predict", ["logits", "x0"])
def test_guided_prediction_combines_the_raw_outputs(predict):
    model = _denoiser(predict)
    x, t, c = torch.randn(2, 6, 8), torch.rand(2), torch.tensor([1.0, 0, 1, 0, 0])
    w = 2.5
    counted = CountedDenoiser(model)
    guided = control.ClassifierFreeGuidance(counted, c, w)
    with torch.no_grad():
        out = guided(x, t)
        cond, null = model(x, t, cond=c.expand(2, -1)), model(x, t)
    if predict == "logits":  # the logits combine; x̂0 is the guided distribution's mean embedding
        torch.testing.assert_close(out.logits, null.logits + w * (cond.logits - null.logits))
        torch.testing.assert_close(out.x0, out.logits.softmax(-1) @ model.embedding.table())
    else:  # x̂0 combines (≡ combining ε̂ or v̂); logits are the rounding head's
        torch.testing.assert_close(out.x0, null.x0 + w * (cond.x0 - null.x0))
        torch.testing.assert_close(out.logits, model.embedding.logits(out.x0))
    assert counted.per_sample(2) == 2 and guided.schedule is model.schedule


# --- sampling on the tiny conditioned run ---------------------------------------------------


@pytest.fixture(scope="module")
def pipe(slot_run):
    return difflm.load(slot_run)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++2m"])
def test_scale_zero_and_one_are_unconditional_and_conditional_sampling_exactly(pipe, sampler):
    c = pipe.conditions.encode([{"food": "Italian"}])
    plain = pipe.generate(6, sampler=sampler, steps=10, seed=3)
    conditional = pipe.generate(6, sampler=sampler, steps=10, seed=3, cond=c.expand(6, -1))
    for w, expected in ((0, plain), (1, conditional)):
        out = pipe.generate(6, condition={"food": "Italian"}, cfg_scale=w, sampler=sampler, steps=10, seed=3)
        assert torch.equal(out.x0, expected.x0) and torch.equal(out.tokens, expected.tokens), w
        assert out.nfe == 10
    assert not torch.equal(plain.tokens, conditional.tokens)


def test_cfg_raises_the_share_of_samples_expressing_the_slot(pipe):
    def share(texts):
        return sum("Italian" in text.split() for text in texts) / len(texts)

    unconditional = share(pipe.sample(N, sampler="ddpm", steps=STEPS, seed=SEED))
    out = pipe.generate(N, condition=["food=Italian"], cfg_scale=3, steps=STEPS, seed=SEED)
    guided = share(pipe.decode(out.tokens))
    print(f"food=Italian: CFG w=3 {guided:.2f}, unconditional {unconditional:.2f}")
    assert guided >= 0.9 and guided >= unconditional + 0.5, (guided, unconditional)
    assert out.nfe == 2 * STEPS  # both halves of every guided call


def test_cfg_composes_with_gradient_guidance(pipe):
    length = control.Length(9, max_len=pipe.config.data.max_len)
    out = pipe.generate(
        8,
        constraints=[length],
        condition="food=Italian",
        cfg_scale=2,
        steps=10,
        seed=SEED,
        guidance={"steps": 1, "active": (0.0, 1.0)},
    )
    assert out.nfe == 2 * (10 + 9)  # the constraint reads the guided prediction: 2 evaluations per call


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"condition": {"food": "Pizza"}}, "'food=Pizza'"),
        ({"condition": {"food": "Italian"}, "cfg_scale": -1.0}, "-1.0"),
        ({"condition": {"food": "Italian"}, "cfg_scale": float("nan")}, "nan"),
        ({"condition": {}}, "at least one"),
        ({"cfg_scale": 3.0}, "needs a condition"),
        ({"condition": {"food": "Italian"}, "guidance": {"steps": 2}}, "need a constraint"),
    ],
)
def test_bad_cfg_inputs_raise_value_error(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe.generate(2, steps=5, **kwargs)


def test_cfg_needs_a_run_trained_with_conditioning(tiny_run):
    with pytest.raises(ValueError, match="model.condition=slots"):
        difflm.load(tiny_run).generate(2, condition={"food": "Italian"}, cfg_scale=3)


# --- CLI ------------------------------------------------------------------------------------


def test_cli_cfg_runs_and_reports_the_attribute(slot_run, capsys):
    code = main(
        [
            "control",
            str(slot_run),
            "--attribute",
            "food=Italian",
            "--cfg-scale",
            "3",
            "--n",
            "4",
            "--steps",
            "10",
            "--format",
            "jsonl",
        ]
    )
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 4, err
    assert all(row["satisfied"]["attribute"] == ("Italian" in row["text"].split()) for row in rows)
    assert "20 denoiser evaluations per sample (attribute by classifier-free guidance, w = 3)" in err, err


@pytest.mark.parametrize(
    "run, argv, message",
    [
        ("slot_run", ["--attribute", "food=Pizza", "--cfg-scale", "3"], "food=Pizza"),
        ("slot_run", ["--attribute", "food=Italian", "--cfg-scale", "-2"], "-2"),
        ("slot_run", ["--cfg-scale", "3"], "--attribute"),
        ("tiny_run", ["--attribute", "food=Italian", "--cfg-scale", "3"], "model.condition=slots"),
    ],
)
def test_cli_bad_cfg_input_exits_2_with_one_line(request, capsys, run, argv, message):
    code = main(["control", str(request.getfixturevalue(run)), "--n", "2", "--steps", "5", *argv])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_cli_attribute_without_classifier_on_a_conditioned_run_suggests_cfg(slot_run, tmp_path, capsys):
    run = tmp_path / "bare"
    run.mkdir()
    for name in ("config.json", "vocab.json", CONDITIONS_FILE, "model.safetensors", "ema.safetensors"):
        shutil.copy(slot_run / name, run / name)
    code = main(["control", str(run), "--attribute", "food=Italian", "--n", "2", "--steps", "5"])
    _, err = capsys.readouterr()
    assert code == 2 and "--cfg-scale" in err, err
