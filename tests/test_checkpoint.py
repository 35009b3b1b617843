import pytest
import torch

from difflm import checkpoint


def test_tensors_round_trip_and_corruption_is_one_clear_error(tmp_path):
    path = tmp_path / "w.safetensors"
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    checkpoint.save_tensors(path, tensors)
    loaded = checkpoint.load_tensors(path)
    assert torch.equal(loaded["a"], tensors["a"]) and torch.equal(loaded["b"], tensors["b"])
    path.write_bytes(path.read_bytes()[:40])  # truncated
    with pytest.raises(ValueError, match="corrupt or truncated"):
        checkpoint.load_tensors(path)
    with pytest.raises(ValueError, match="missing"):
        checkpoint.load_tensors(tmp_path / "nope.safetensors")


def test_atomic_write_leaves_no_temp_files(tmp_path):
    checkpoint.atomic_write_text(tmp_path / "x.json", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_optimizer_state_round_trip():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, plain = checkpoint.optimizer_to_tensors(opt)
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.5)
    checkpoint.optimizer_from_tensors(opt2, tensors, plain)
    for s1, s2 in zip(opt.state.values(), opt2.state.values()):
        assert torch.equal(s1["exp_avg"], s2["exp_avg"]) and torch.equal(s1["step"], s2["step"])
    assert opt2.param_groups[0]["lr"] == 0.1


def test_mismatched_weights_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    checkpoint.save_weights(path, torch.nn.Linear(3, 2))
    with pytest.raises(ValueError, match="do not fit"):
        checkpoint.load_weights(torch.nn.Linear(4, 2), path)


def test_tied_weights_round_trip(tmp_path):
    from difflm.config import ModelConfig
    from difflm.model.autoregressive import CausalLM

    model = CausalLM(ModelConfig(kind="autoregressive", hidden=16, layers=1, heads=2), 9, 5)
    checkpoint.save_weights(tmp_path / "lm.safetensors", model)
    fresh = CausalLM(ModelConfig(kind="autoregressive", hidden=16, layers=1, heads=2), 9, 5)
    checkpoint.load_weights(fresh, tmp_path / "lm.safetensors")
    assert torch.equal(fresh.tok.weight, model.tok.weight) and fresh.head.weight is fresh.tok.weight
