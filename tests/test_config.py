import pytest
from omegaconf.errors import ConfigKeyError, ValidationError

from conftest import ROOT
from mgld.config import Config, ModelConfig, load_config, to_yaml


def test_full_size_yaml_equals_the_schema_defaults():
    assert load_config(ROOT / "configs/model/mgld_sd21.yaml").model == ModelConfig()


def test_tiny_yaml_and_overrides():
    cfg = load_config(ROOT / "configs/tiny.yaml", ["model.unet.temporal_alpha_init=0.25", "model.num_frames=3"])
    assert cfg.model.unet.model_channels == 32
    assert cfg.model.unet.temporal_alpha_init == 0.25
    assert cfg.model.num_frames == 3
    assert cfg.model.unet.context_dim == 64 and cfg.model.unet.use_linear_projection is True


def test_typo_names_the_key_and_suggests():
    with pytest.raises(ConfigKeyError, match="num_frame.*Did you mean.*num_frames"):
        load_config(ROOT / "configs/tiny.yaml", ["model.num_frame=3"])


def test_wrong_type_is_refused():
    with pytest.raises(ValidationError):
        load_config(None, ["model.unet.model_channels=wide"])


def test_cross_field_validation():
    with pytest.raises(ValueError, match="cond_encoder.out_channels"):
        load_config(ROOT / "configs/tiny.yaml", ["model.cond_encoder.out_channels=64"])


def test_base_files_merge_underneath(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  num_frames: 7\n  unet:\n    model_channels: 64\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nmodel:\n  unet:\n    model_channels: 96\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.model.num_frames == 7 and cfg.model.unet.model_channels == 96


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_to_yaml_round_trips(tmp_path):
    cfg = load_config(ROOT / "configs/tiny.yaml")
    (tmp_path / "saved.yaml").write_text(to_yaml(cfg))
    assert load_config(tmp_path / "saved.yaml", schema=Config) == cfg
