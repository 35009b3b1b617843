import json

import pytest

from difflm.cli import main
from tests.conftest import CONFIGS


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_then_sample_text_and_jsonl(tmp_path, toy_corpus, capsys):
    run = tmp_path / "run"
    code, out, _ = run_cli(
        capsys,
        "train",
        "--corpus",
        f"lines:{toy_corpus}",
        "--config",
        str(CONFIGS / "tiny.yaml"),
        "--set",
        "train.steps=20",
        "data.max_len=16",
        "--out",
        str(run),
        "--no-progress",
    )
    assert code == 0 and json.loads(out.splitlines()[-1])["run"] == str(run)
    code, out, _ = run_cli(capsys, "sample", str(run), "--n", "3", "--sampler", "ddpm", "--steps", "10", "--seed", "1")
    assert code == 0 and len(out.splitlines()) == 3
    code, out, _ = run_cli(
        capsys, "sample", str(run), "--n", "2", "--steps", "5", "--clamp-from", "100", "--format", "jsonl"
    )
    assert code == 0 and all("text" in json.loads(line) for line in out.splitlines())


def test_demo_runs_on_the_bundled_corpus(tmp_path, capsys):
    code, out, _ = run_cli(
        capsys,
        "demo",
        "--out",
        str(tmp_path / "demo"),
        "--config",
        str(CONFIGS / "tiny.yaml"),
        "--set",
        "train.steps=10",
        "data.max_len=24",
        "train.threads=1",
    )
    assert code == 0
    assert "unconditional samples" in out and "grammatical:" in out and "controlled samples" in out
    assert "constraints held: " in out and out.count("grammatical: ") == 2  # controlled samples are judged twice


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "/no/such/run"], "run directory not found"),
        (["train", "--corpus", "lines:/no/such/file.txt", "--out", "X"], "/no/such/file.txt"),
        (["train", "--corpus", "nonsense", "--out", "X"], "nonsense"),
        (["train", "--out", "X", "--set", "train.bogus=1"], "unknown config key"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err


def test_bad_sampling_options_exit_2(tiny_run, capsys):
    for argv in (
        ["--sampler", "euler"],
        ["--steps", "0"],
        ["--eta", "2"],
        ["--n", "0"],
        ["--grid", "karras"],
        ["--sampler", "consistency", "--grid", "logsnr"],
        ["--sampler", "dpm++2m", "--eta", "0.5"],
        ["--sampler", "distilled", "--refine-from", "1.5"],
        ["--sampler", "ddpm", "--refine-from", "0.3"],
    ):
        code, _, err = run_cli(capsys, "sample", str(tiny_run), *argv)
        assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)


def test_sample_with_every_registered_sampler(tiny_run, capsys):
    from difflm.sampling import SAMPLERS

    for name in SAMPLERS:
        code, out, err = run_cli(capsys, "sample", str(tiny_run), "--n", "2", "--sampler", name, "--steps", "4")
        if name in ("shortcut", "meanflow"):  # they need a model trained with a jump size
            assert code == 2 and "jump size" in err, name
        elif name == "sweep":  # it needs a model trained with left-to-right noise
            assert code == 2 and "not trained with left-to-right noise" in err, name
        else:
            assert code == 0 and len(out.splitlines()) == 2, name
    code, out, _ = run_cli(
        capsys, "sample", str(tiny_run), "--n", "2", "--sampler", "dpm++2m", "--steps", "4", "--grid", "logsnr"
    )
    assert code == 0 and len(out.splitlines()) == 2


def test_corrupt_checkpoint_exit_2(tmp_path, tiny_run, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    (run / "ema.safetensors").write_bytes(b"\x00garbage")
    code, _, err = run_cli(capsys, "sample", str(run))
    assert code == 2 and "ema.safetensors" in err


def test_eval_with_teacher_grammar_and_reference(tmp_path, toy_corpus, capsys):
    from difflm.text.grammar import default_grammar

    teacher = tmp_path / "teacher"
    code, _, _ = run_cli(
        capsys,
        "train",
        "--corpus",
        f"lines:{toy_corpus}",
        "--config",
        str(CONFIGS / "tiny.yaml"),
        "--set",
        "model.kind=autoregressive",
        "train.steps=30",
        "data.max_len=16",
        "--out",
        str(teacher),
        "--no-progress",
    )
    assert code == 0
    samples = tmp_path / "samples.txt"
    samples.write_text("Zizzi serves French food in the riverside .\nfood food food\n")
    code, out, _ = run_cli(capsys, "sample", str(teacher), "--n", "3", "--seed", "2")  # the AR baseline samples too
    assert code == 0 and len(out.splitlines()) == 3
    code, out, _ = run_cli(capsys, "eval", str(samples), "--teacher", str(teacher), "--reference")
    report = json.loads(out)
    assert code == 0 and report["samples"]["n"] == 2 and report["samples"]["lm_score"] > 1
    assert report["reference"]["lm_score"] < report["samples"]["lm_score"]  # human text is more fluent
    assert report["reference"]["within_human_range"] >= 0.9 and 0 <= report["samples"]["within_human_range"] <= 1
    assert "grammatical" not in report["samples"]  # a lines: corpus has no grammar

    sentences = [" ".join(s.tokens) for s in default_grammar().sample(20, seed=3)]
    (tmp_path / "g.jsonl").write_text(
        "".join(json.dumps({"text": s}) + "\n" for s in sentences + [" ".join(reversed(sentences[0].split()))])
    )
    code, out, _ = run_cli(capsys, "eval", str(tmp_path / "g.jsonl"), "--grammar")
    assert code == 0 and json.loads(out)["samples"]["grammatical"] == pytest.approx(20 / 21)


def test_eval_user_errors(tmp_path, capsys):
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "none.txt"))
    assert code == 2 and "not found" in err
    (tmp_path / "s.txt").write_text("a b\n")
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "s.txt"), "--reference")
    assert code == 2 and "--teacher" in err
