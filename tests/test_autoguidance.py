"""Self-conditioning guidance: the guided prediction, sampling with it, the pipeline and the CLI."""

from __future__ import annotations

import pytest
import torch

import difflm
from difflm.cli import main
from difflm.config import ModelConfig
from difflm.control.classifier_constraints import CLASSIFIER_GUIDANCE_STEPS, CLASSIFIER_TEMPERATURE, POS
from difflm.control.classifiers import ClassifierConfig, PosClassifier
from difflm.control.constraints import Length
from difflm.diffusion.schedules import make_schedule
from difflm.model.denoiser import Denoiser
from difflm.sampling import get_sampler
from difflm.sampling.autoguidance import SelfConditioningGuidance
from difflm.sampling.rounding import SAMPLING_TEMPERATURE
from difflm.sampling.wrappers import CountedDenoiser
from difflm.train import train
from tests.conftest import tiny_config

torch.set_num_threads(1)


def _denoiser(predict: str = "logits", self_condition: bool = True) -> Denoiser:
    torch.manual_seed(0)
    config = ModelConfig(
        embed_dim=8, hidden=32, layers=1, heads=2, dropout=0.0, predict=predict, self_condition=self_condition
    )
    return Denoiser(config, 11, 6, make_schedule("sqrt", 100)).eval()


def _pos_classifier(pipe: difflm.Pipeline) -> PosClassifier:
    """An untrained POS classifier that fits the run (what guidance reads need not be good here)."""
    shape = ClassifierConfig("pos", pipe.config.model.embed_dim, pipe.config.data.max_len, PosClassifier.tag_set())
    return PosClassifier(shape).eval()


@pytest.fixture(scope="module")
def sc_run(tmp_path_factory, toy_corpus):
    """A tiny self-conditioned run (a few seconds of training)."""
    run = tmp_path_factory.mktemp("runs") / "sc"
    train(tiny_config(f"lines:{toy_corpus}", "train.steps=40", "model.self_condition=true"), run, progress=False)
    return run


@pytest.mark.parametrize("predict", ["logits", "x0"])
@pytest.mark.parametrize("w", [0.0, 2.0])
def test_guided_prediction_extrapolates_from_the_call_without_self_conditioning(predict, w):
    model = _denoiser(predict)
    x, t, draft = torch.randn(3, 6, 8), torch.rand(3), torch.randn(3, 6, 8)
    with torch.no_grad():
        strong, weak = model(x, t, self_cond=draft), model(x, t, self_cond=torch.zeros_like(x))
        guided = SelfConditioningGuidance(model, w)(x, t, self_cond=draft)
    raw = (lambda p: p.logits) if predict == "logits" else (lambda p: p.x0)
    torch.testing.assert_close(raw(guided), raw(weak) + w * (raw(strong) - raw(weak)), atol=1e-5, rtol=1e-5)
    if w == 0.0:  # the weak branch itself
        torch.testing.assert_close(guided.x0, weak.x0, atol=1e-5, rtol=1e-5)
    if predict == "logits":  # x̂0 stays the mixture of embeddings under the guided word distribution
        torch.testing.assert_close(guided.x0, guided.logits.softmax(-1) @ model.embedding.table())


def test_guidance_makes_one_call_without_a_draft_and_two_with_one():
    model = _denoiser()
    counted = CountedDenoiser(model)
    guided = SelfConditioningGuidance(counted, 2.0)
    x, t = torch.randn(2, 6, 8), torch.rand(2)
    with torch.no_grad():
        first = guided(x, t, self_cond=torch.zeros_like(x))  # before any draft: nothing to guide by
        assert counted.per_sample(2) == 1 and torch.equal(first.logits, model(x, t).logits)
        guided(x, t, self_cond=torch.randn_like(x))
    assert counted.per_sample(2) == 3


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_scale_one_is_exactly_unguided_sampling_and_two_changes_it(sampler):
    model = _denoiser()
    sample = get_sampler(sampler)

    def draw(denoiser):
        return sample(denoiser, (4, 6, 8), steps=10, generator=torch.Generator().manual_seed(0))

    plain, same, guided = (
        draw(model),
        draw(SelfConditioningGuidance(model, 1.0)),
        draw(SelfConditioningGuidance(model, 2.0)),
    )
    assert torch.equal(plain.x0, same.x0)
    assert not torch.equal(plain.x0, guided.x0)


def test_guidance_refuses_runs_without_self_conditioning_and_bad_scales():
    with pytest.raises(ValueError, match="self-conditioning guidance needs a run trained with self-conditioning"):
        SelfConditioningGuidance(_denoiser(self_condition=False), 2.0)
    for bad in (-1.0, float("nan"), True, "2"):
        with pytest.raises(ValueError, match="guidance scale w must be a number ≥ 0"):
            SelfConditioningGuidance(_denoiser(), bad)


def test_pipeline_guides_self_conditioned_runs_by_default_and_counts_both_halves(sc_run, tiny_run):
    pipe = difflm.load(sc_run)
    plain = pipe.generate(3, sampler="ddim", steps=8, seed=0, sc_guidance=1.0)
    assert plain.nfe == 8
    guided = pipe.generate(3, sampler="ddim", steps=8, seed=0)
    assert guided.nfe == 1 + 2 * 7  # the default scale 2; the first step has no draft yet
    assert torch.equal(pipe.generate(3, sampler="ddim", steps=8, seed=0, sc_guidance=2.0).x0, guided.x0)
    # Under a classifier constraint self-conditioning guidance is off unless asked for.
    pos = POS("DET NOUN", run=_pos_classifier(pipe), judge="grammar")
    assert pipe.generate(3, sampler="ddim", steps=8, seed=0, constraints=[pos]).nfe == 8
    assert pipe.generate(3, sampler="ddim", steps=8, seed=0, constraints=[pos], sc_guidance=2.0).nfe == 15
    other = difflm.load(tiny_run)  # without self-conditioning: unguided by default, refused if asked
    assert other.generate(2, steps=4).nfe == 4
    with pytest.raises(ValueError, match="needs a run trained with self-conditioning"):
        other.generate(2, steps=4, sc_guidance=2.0)


def test_classifier_constraints_guide_with_their_own_defaults(sc_run):
    # Under a classifier: τ = CLASSIFIER_TEMPERATURE and K = CLASSIFIER_GUIDANCE_STEPS unless told
    # otherwise; a constraint that fixes words keeps the sampling temperature and GradientGuidance's K.
    pipe = difflm.load(sc_run)
    pos = POS("DET NOUN", run=_pos_classifier(pipe), judge="grammar")

    def x0(constraint: object, **options: object) -> torch.Tensor:
        return pipe.generate(3, sampler="ddim", steps=8, seed=0, constraints=[constraint], **options).x0

    own = {"temperature": CLASSIFIER_TEMPERATURE, "guidance": {"steps": CLASSIFIER_GUIDANCE_STEPS}}
    assert torch.equal(x0(pos), x0(pos, **own))
    assert not torch.equal(x0(pos), x0(pos, temperature=SAMPLING_TEMPERATURE))
    assert not torch.equal(x0(pos), x0(pos, guidance={"steps": 3}))
    length = Length(4, max_len=pipe.config.data.max_len)
    assert torch.equal(x0(length), x0(length, temperature=SAMPLING_TEMPERATURE, guidance={"steps": 3}))
    assert not torch.equal(x0(length), x0(length, **own))


def test_cli_samples_with_sc_guidance_and_rejects_it_on_a_run_without_self_conditioning(sc_run, tiny_run, capsys):
    assert main(["sample", str(sc_run), "--n", "3", "--sampler", "ddim", "--steps", "6", "--sc-guidance", "2"]) == 0
    assert capsys.readouterr().out.count("\n") == 3  # one line per sentence (an untrained run may write empty ones)
    assert main(["sample", str(tiny_run), "--n", "2", "--steps", "4", "--sc-guidance", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "self-conditioning" in err


def test_control_composes_sc_guidance_with_gradient_guidance(sc_run, capsys):
    # One generation path: difflm control takes --sc-guidance like difflm sample, and counts both halves.
    argv = ["control", str(sc_run), "--length", "8", "--n", "2", "--sampler", "ddim", "--steps", "6"]
    assert main([*argv, "--guidance-steps", "1", "--active", "0", "1", "--sc-guidance", "1"]) == 0
    plain = capsys.readouterr().err
    assert main([*argv, "--guidance-steps", "1", "--active", "0", "1", "--sc-guidance", "2"]) == 0
    guided = capsys.readouterr().err
    # 6 sampler steps + 5 guidance steps. Guided, each sampler step after the first draft is two
    # evaluations; the constraints read f(x, t) without a draft, which is one.
    assert "11 denoiser evaluations" in plain and "16 denoiser evaluations" in guided, (plain, guided)
