import json

import pytest

from difflm.config import Config, load_config


def test_defaults_round_trip_through_json(tmp_path):
    config = Config()
    path = tmp_path / "config.json"
    config.save(path)
    assert Config.from_dict(json.loads(path.read_text())) == config


def test_overrides_parse_types_and_reject_unknown_keys():
    config = Config().with_overrides(["train.steps=123", "model.self_condition=true", "train.lr=0.01"])
    assert config.train.steps == 123 and config.model.self_condition is True and config.train.lr == 0.01
    with pytest.raises(ValueError, match="unknown config key 'train.stepz'"):
        Config().with_overrides(["train.stepz=3"])
    with pytest.raises(ValueError, match="expected section.key=value"):
        Config().with_overrides(["steps=3"])
    with pytest.raises(ValueError, match="expects int"):
        Config().with_overrides(["train.steps=many"])


def test_invalid_values_are_refused():
    with pytest.raises(ValueError, match="model.predict"):
        Config().with_overrides(["model.predict=score"])
    with pytest.raises(ValueError, match="divisible"):
        Config().with_overrides(["model.hidden=130"])


def test_yaml_file_with_unknown_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trian:\n  steps: 3\n")
    with pytest.raises(ValueError, match="unknown config section"):
        load_config(path)
    with pytest.raises(ValueError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_run_saved_before_a_key_existed_keeps_its_old_behaviour(tmp_path):
    Config().save(tmp_path / "config.json")
    assert Config.load_run(tmp_path).model.posterior_input is True  # saved keys are kept
    raw = json.loads((tmp_path / "config.json").read_text())
    del raw["model"]["posterior_input"]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert Config.load_run(tmp_path).model.posterior_input is False
    assert load_config(None).model.posterior_input is True  # new configs get today's default
