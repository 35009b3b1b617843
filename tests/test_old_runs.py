"""Run directories saved by older versions of difflm still load, sample and resume training.

tests/data/old_runs/ holds tiny runs (30 steps, a few hundred KB each) trained by the old
code on the bundled grammar corpus, so that resuming them needs no data file:

    COMMIT_name                 written by                      what it covers
    44b0fdd_diffusion_selfcond  44b0fdd (before the objectives/ self-conditioning, self_cond_gap=0.25
                                and run.py restructure)
    44b0fdd_slots               44b0fdd                         model.condition=slots (conditions.json, CFG)
    44b0fdd_autoregressive      44b0fdd                         model.kind=autoregressive
    a10093a_diffusion_selfcond  a10093a (before CFG, the one-    a config.json without posterior_input,
                                step generators, posterior      condition, generator, self_cond_gap,
                                input and distillation)         cond_drop, train.teacher and the
                                                                shortcut/meanflow/consistency/distill sections
    25b3769_time_sampling       25b3769 (diffusion.time_sampling, a config.json with the since-removed key
                                reverted in d610e5c)            diffusion.time_sampling="uniform" (a removed key)

They were made with this script (run from the repository root, PYTHONPATH otherwise unset;
each `old` call first checks that the old tree's difflm is the one imported):

    for c in 44b0fdd a10093a 25b3769; do
        rm -rf /tmp/old_$c; mkdir -p /tmp/old_$c; git archive $c | tar -x -C /tmp/old_$c; done
    OUT=tests/data/old_runs
    COMMON="data.max_len=12 model.embed_dim=8 model.hidden=16 model.layers=1 model.heads=2
            train.steps=30 train.warmup=5 train.eval_every=30 train.checkpoint_every=30
            train.log_every=10 train.threads=1 diffusion.steps=50"          # one line in the script
    old() { c=$1; name=$2; shift 2
        PYTHONPATH=/tmp/old_$c/src .venv/bin/python -c \\
            "import difflm; assert difflm.__file__.startswith('/tmp/old_$c/'), difflm.__file__"
        PYTHONPATH=/tmp/old_$c/src .venv/bin/python -m difflm.cli train \\
            --config /tmp/old_$c/configs/tiny.yaml --corpus grammar --no-progress \\
            --out $OUT/${c}_$name --set $COMMON "$@"; }
    old 44b0fdd diffusion_selfcond model.self_condition=true diffusion.self_cond_gap=0.25
    old 44b0fdd slots model.condition=slots diffusion.cond_drop=0.1
    old 44b0fdd autoregressive model.kind=autoregressive
    old a10093a diffusion_selfcond model.self_condition=true
    old 25b3769 time_sampling
    chmod -R a+rX $OUT; rm -rf /tmp/old_44b0fdd /tmp/old_a10093a /tmp/old_25b3769

Every file the old trainer wrote is kept (config, vocab, conditions, model/EMA/optimizer
weights, train_state.json, metrics.jsonl), so the tests can also resume training. The
runs are far too short to write sentences; the tests check that the current code reads
them, computes with them what the old code computed, and trains on from their checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import difflm
from difflm.config import Config
from difflm.run import load_run
from difflm.text.dataset import prepare_data
from difflm.train import heldout_loss, train

OLD_RUNS = Path(__file__).resolve().parent / "data" / "old_runs"

#: Runs whose logged held-out loss the current code must reproduce exactly (same
#: held-out batching and noise as today; a10093a still scored in train.batch_size batches).
SAME_HELDOUT = {"44b0fdd_diffusion_selfcond", "44b0fdd_slots", "44b0fdd_autoregressive"}

RUNS = [
    "44b0fdd_diffusion_selfcond",
    "44b0fdd_slots",
    "44b0fdd_autoregressive",
    "a10093a_diffusion_selfcond",
    "25b3769_time_sampling",
]

#: The slot value the conditioned run is guided towards (one of its conditions.json labels).
CONDITION = {"food": "Italian"}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _saved_step(run: Path) -> int:
    return json.loads((run / "train_state.json").read_text(encoding="utf-8"))["step"]


@pytest.mark.parametrize("name", RUNS)
def test_old_run_loads_and_samples(name):
    run = OLD_RUNS / name
    pipe = difflm.load(run, device="cpu")
    saved = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert pipe.config.model.kind == saved["model"]["kind"]
    assert pipe.config.data.max_len == saved["data"]["max_len"]
    if pipe.is_autoregressive:
        sentences = pipe.sample(2)
    elif pipe.conditions is not None:
        assert "food=Italian" in pipe.conditions.labels
        out = pipe.generate(2, steps=5, condition=CONDITION, cfg_scale=2)
        assert out.tokens.shape == (2, pipe.config.data.max_len)
        assert 0 <= int(out.tokens.min()) and int(out.tokens.max()) < len(pipe.vocab)
        sentences = pipe.sample(2, steps=5, condition=CONDITION, cfg_scale=2)
    else:
        assert pipe.model.self_conditioning == saved["model"]["self_condition"]
        sentences = pipe.sample(2, steps=5)
    assert len(sentences) == 2 and all(isinstance(s, str) for s in sentences)


def test_runs_older_than_posterior_input_build_the_network_they_were_trained_with():
    config = Config.load_run(OLD_RUNS / "a10093a_diffusion_selfcond")
    assert (
        "posterior_input"
        not in json.loads((OLD_RUNS / "a10093a_diffusion_selfcond" / "config.json").read_text())["model"]
    )
    assert config.model.posterior_input is False and config.model.condition == "none"
    assert config.model.generator == "diffusion" and config.diffusion.self_cond_gap == 0.0


@pytest.mark.parametrize("name", sorted(SAME_HELDOUT))
def test_current_code_scores_old_weights_as_the_old_code_did(name):
    """The held-out loss of the stored EMA weights equals the one the old trainer logged at its last step."""
    run_dir = OLD_RUNS / name
    run = load_run(run_dir, device="cpu")
    data = prepare_data(run.config, None, run.vocab, run.conditions)
    got = heldout_loss(run.model, data.valid, run.config, torch.device("cpu"), cond=data.valid_cond)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    logged = [row for row in rows if row["split"] == "valid" and row["step"] == _saved_step(run_dir)]
    assert logged, f"{name}: no held-out row at the saved step"
    for term, value in logged[-1].items():
        if term in ("step", "split", "elapsed", "cpu_seconds"):
            continue
        assert got[term] == pytest.approx(value, rel=1e-4, abs=1e-6), term


@pytest.mark.parametrize("name", RUNS)
def test_old_run_resumes_training(name, tmp_path):
    run = tmp_path / name
    shutil.copytree(OLD_RUNS / name, run)
    start = _saved_step(run)
    weights_before = (run / "model.safetensors").read_bytes()
    config = Config.load_run(run).with_overrides([f"train.steps={start + 3}"])
    last = train(config, run, progress=False)
    assert _saved_step(run) == start + 3
    assert last["train"]["step"] == start + 3 and torch.isfinite(torch.tensor(last["train"]["loss"]))
    assert (run / "model.safetensors").read_bytes() != weights_before
    assert not any(p.name.endswith(".lock") for p in run.iterdir())
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert steps == sorted(steps) and steps[-1] == start + 3
    # the resumed run is still a run of the current code: it loads and samples
    pipe = difflm.load(run, device="cpu")
    assert len(pipe.sample(1) if pipe.is_autoregressive else pipe.sample(1, steps=2)) == 1


def test_a_removed_option_with_another_value_is_refused_by_name(tmp_path):
    run = tmp_path / "warped"
    shutil.copytree(OLD_RUNS / "25b3769_time_sampling", run)
    config = json.loads((run / "config.json").read_text())
    config["diffusion"]["time_sampling"] = "warped"  # a behaviour this version no longer has
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="time_sampling"):
        load_run(run)
