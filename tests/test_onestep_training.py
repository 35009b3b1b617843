"""Training the one/few-step generators: the trainer, resume, distillation, the CLI, old runs."""

import json
from pathlib import Path

import pytest
import torch

import difflm
from difflm import checkpoint
from difflm.cli import main
from difflm.config import Config
from difflm.sampling.teacher import teacher_words, tied_noise
from difflm.train import Trainer
from tests.conftest import CONFIGS, tiny_config, train_interrupted_then_resumed


def _rows(run: Path, split: str = "train") -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


@pytest.mark.parametrize("generator", ["shortcut", "meanflow", "consistency"])
def test_each_objective_trains_checkpoints_and_resumes_exactly(tmp_path, toy_corpus, generator):
    config = tiny_config(
        f"lines:{toy_corpus}",
        f"model.generator={generator}",
        "train.steps=32",
        "train.lr=3e-3",
        "train.log_every=8",
        "train.eval_every=16",
        "train.checkpoint_every=16",
    )
    Trainer(config, tmp_path / "full", progress=False).run()
    train_interrupted_then_resumed(config, tmp_path / "cut", crash_at=21)  # resumes from step 16
    full, cut = _rows(tmp_path / "full"), _rows(tmp_path / "cut")
    assert [r["step"] for r in full] == [r["step"] for r in cut] == [8, 16, 24, 32]
    for a, b in zip(full, cut):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    assert generator in full[-1]  # its own term is logged (and the loss falls)
    assert full[-1]["loss"] < 0.8 * full[0]["loss"]


def test_consistency_distillation_starts_from_the_teacher(tmp_path, tiny_run):
    teacher_config = Config.from_dict(checkpoint.read_json(tiny_run / "config.json"))
    config = teacher_config.with_overrides(
        [
            "model.generator=consistency",
            f"train.teacher={tiny_run}",
            "train.steps=12",
            "train.log_every=4",
            "train.eval_every=12",
            "train.checkpoint_every=12",
        ]
    )
    trainer = Trainer(config, tmp_path / "cd", progress=False)
    teacher = difflm.load(tiny_run).model
    for (name, p), q in zip(trainer.model.named_parameters(), teacher.parameters()):
        assert torch.equal(p, q), name
    trainer.run()
    assert (tmp_path / "cd" / "vocab.json").read_text() == (tiny_run / "vocab.json").read_text()
    rows = _rows(tmp_path / "cd")
    assert all(r["consistency"] > 0 for r in rows) and _rows(tmp_path / "cd", "valid")[-1]["consistency"] > 0
    texts = difflm.load(tmp_path / "cd").sample(4, sampler="consistency", steps=2)
    assert len(texts) == 4

    with pytest.raises(ValueError, match=r"model.hidden \(teacher 64, here 32\)"):
        Trainer(config.with_overrides(["model.hidden=32"]), tmp_path / "bad", progress=False)
    with pytest.raises(ValueError, match="no difflm run"):
        Trainer(config.with_overrides([f"train.teacher={tmp_path / 'none'}"]), tmp_path / "bad", progress=False)
    with pytest.raises(ValueError, match="not a diffusion model"):
        Trainer(config.with_overrides([f"train.teacher={tmp_path / 'cd'}"]), tmp_path / "bad", progress=False)


def test_sampler_distillation_copies_the_teacher_in_one_step_and_resumes_exactly(tmp_path, tiny_run):
    teacher_config = Config.from_dict(checkpoint.read_json(tiny_run / "config.json"))
    config = teacher_config.with_overrides(
        [
            "model.generator=distilled",
            f"train.teacher={tiny_run}",
            "train.steps=120",
            "distill.teacher_steps=4",
            "train.lr=2e-3",
            "train.log_every=12",
            "train.eval_every=60",
            "train.checkpoint_every=24",
        ]
    )
    teacher = difflm.load(tiny_run).model
    x_T = torch.randn((64, 16, teacher.embedding.dim), generator=torch.Generator().manual_seed(7))
    words = teacher_words(teacher, x_T, sampler=config.distill.sampler, steps=4, temperature=0.1)

    def agreement(student):  # share of positions where one student step writes the teacher's word
        with torch.no_grad():
            return (student(x_T, torch.ones(64)).logits.argmax(-1) == words).float().mean().item()

    Trainer(config, tmp_path / "full", progress=False).run()
    train_interrupted_then_resumed(config, tmp_path / "cut", crash_at=61)  # resumes from step 48
    full, cut = _rows(tmp_path / "full"), _rows(tmp_path / "cut")
    assert [r["step"] for r in full] == [r["step"] for r in cut] == list(range(12, 121, 12))
    for a, b in zip(full, cut):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    assert all("distill" in r and "ce" in r for r in full)  # both terms, logged apart
    assert full[-1]["distill"] < 0.8 * full[0]["distill"]
    student = difflm.load(tmp_path / "full")
    # 120 steps: 0.83 against the teacher's own 0.78 at t = 1, where it cannot read x_T
    assert agreement(student.model) > agreement(teacher) + 0.03
    for steps in (1, 2, 4):
        assert len(student.sample(3, sampler="distilled", steps=steps)) == 3


def test_cli_distils_a_run_and_samples_and_controls_with_the_student(tmp_path, tiny_run, capsys):
    run = tmp_path / "student"
    code, _, err = run_cli(
        capsys,
        "train",
        "--config",
        str(tiny_run / "config.json"),
        "--set",
        "model.generator=distilled",
        f"train.teacher={tiny_run}",
        "train.steps=4",
        "--out",
        str(run),
        "--no-progress",
    )
    assert code == 0, err
    code, out, err = run_cli(
        capsys, "sample", str(run), "--n", "3", "--sampler", "distilled", "--steps", "2", "--refine-from", "0.3"
    )
    assert code == 0 and len(out.splitlines()) == 3, err
    code, _, err = run_cli(
        capsys, "control", str(run), "--sampler", "distilled", "--steps", "3", "--length", "5", "--n", "2"
    )
    assert code == 0 and "denoiser evaluations" in err
    code, _, err = run_cli(
        capsys,
        "train",
        "--config",
        str(tiny_run / "config.json"),
        "--set",
        "model.generator=distilled",
        "--out",
        str(tmp_path / "orphan"),
        "--no-progress",
    )
    assert code == 2 and "needs train.teacher" in err


def test_the_distillation_teacher_is_a_deterministic_map_of_its_noise(tiny_run):
    teacher = difflm.load(tiny_run).model
    x_T = torch.randn((8, 16, teacher.embedding.dim), generator=torch.Generator().manual_seed(1))
    for k in range(3):  # each step's noise is a rotation of x_T at every position: N(0, I) again
        z = tied_noise(x_T, k)
        torch.testing.assert_close(z.norm(dim=-1), x_T.norm(dim=-1))
        assert (z * x_T).sum().abs() < 0.2 * x_T.pow(2).sum()
    for sampler in ("ddim", "ddpm"):
        a, b = (teacher_words(teacher, x, sampler=sampler, steps=4, temperature=0.1) for x in (x_T, x_T.clone()))
        other = teacher_words(teacher, -x_T, sampler=sampler, steps=4, temperature=0.1)
        assert torch.equal(a, b) and not torch.equal(a, other)
    with pytest.raises(ValueError, match="distill.sampler"):
        teacher_words(teacher, x_T, sampler="dpm++2m", steps=4, temperature=0.1)


def test_runs_saved_before_the_generators_load_unchanged(tiny_run):
    raw = checkpoint.read_json(tiny_run / "config.json")
    for section in ("shortcut", "meanflow", "consistency", "distill"):
        raw.pop(section)
    del raw["model"]["generator"], raw["train"]["teacher"]
    assert Config.from_dict(raw) == Config.from_dict(checkpoint.read_json(tiny_run / "config.json"))
    keys = set(checkpoint.load_tensors(tiny_run / "ema.safetensors"))
    assert keys == set(difflm.load(tiny_run).model.state_dict()) and not any("jump" in k for k in keys)


@pytest.mark.parametrize(
    "bad, message",
    [
        (["model.generator=gan"], "model.generator must be one of"),
        (["train.teacher=somewhere"], "train.teacher is only used by model.generator=consistency or distilled"),
        (["model.generator=distilled"], "model.generator=distilled needs train.teacher"),
        (["distill.teacher_steps=0"], "distill.teacher_steps"),
        (["model.generator=shortcut", "model.predict=x0"], "model.predict=logits"),
        (["model.generator=meanflow", "model.self_condition=true"], "model.self_condition"),
        (["model.generator=consistency", "model.condition=slots"], "model.condition"),
        (["model.generator=shortcut", "shortcut.levels=11"], "shortcut.levels"),
    ],
)
def test_bad_generator_settings_are_refused(toy_corpus, bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(f"lines:{toy_corpus}", *bad)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("generator", ["shortcut", "meanflow", "consistency"])
def test_cli_trains_each_generator_and_samples_in_one_step(tmp_path, toy_corpus, capsys, generator):
    run = tmp_path / generator
    code, out, err = run_cli(
        capsys,
        "train",
        "--corpus",
        f"lines:{toy_corpus}",
        "--config",
        str(CONFIGS / "tiny.yaml"),
        "--set",
        f"model.generator={generator}",
        "train.steps=6",
        "data.max_len=16",
        "train.threads=1",
        "--out",
        str(run),
        "--no-progress",
    )
    assert code == 0, err
    code, out, err = run_cli(
        capsys, "sample", str(run), "--n", "3", "--sampler", generator, "--steps", "1", "--format", "jsonl"
    )
    assert code == 0 and len(out.splitlines()) == 3 and all("text" in json.loads(line) for line in out.splitlines())
    code, _, err = run_cli(
        capsys, "control", str(run), "--sampler", generator, "--steps", "4", "--length", "8", "--n", "2"
    )
    assert code == 0 and "denoiser evaluations" in err  # gradient guidance runs between the jumps
    if generator == "shortcut":
        code, _, err = run_cli(capsys, "sample", str(run), "--sampler", "shortcut", "--steps", "3")
        assert code == 2 and "power of two" in err and len(err.strip().splitlines()) == 1
