import dataclasses
import re

import pytest
from omegaconf.errors import ConfigKeyError, ValidationError

from conftest import ROOT
from infer_helpers import TINY
from mgld.config import Config, ModelConfig, SamplingConfig, load_config, to_yaml


def test_full_size_yaml_equals_the_schema_defaults():
    assert load_config(ROOT / "configs/model/mgld_sd21.yaml").model == ModelConfig()


def test_tiny_yaml_and_overrides():
    cfg = load_config(TINY, ["model.unet.temporal_alpha_init=0.25", "model.num_frames=3"])
    assert cfg.model.unet.model_channels == 32
    assert cfg.model.unet.temporal_alpha_init == 0.25
    assert cfg.model.num_frames == 3
    assert cfg.model.unet.context_dim == 64 and cfg.model.unet.use_linear_projection is True


def test_typo_names_the_key_and_suggests():
    with pytest.raises(ConfigKeyError, match="num_frame.*Did you mean.*num_frames"):
        load_config(TINY, ["model.num_frame=3"])


def test_wrong_type_is_refused():
    with pytest.raises(ValidationError):
        load_config(None, ["model.unet.model_channels=wide"])


def test_cross_field_validation():
    with pytest.raises(ValueError, match="cond_encoder.out_channels"):
        load_config(TINY, ["model.cond_encoder.out_channels=64"])


def test_base_files_merge_underneath(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  num_frames: 7\n  unet:\n    model_channels: 64\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nmodel:\n  unet:\n    model_channels: 96\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.model.num_frames == 7 and cfg.model.unet.model_channels == 96


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_to_yaml_round_trips(tmp_path):
    cfg = load_config(TINY)
    (tmp_path / "saved.yaml").write_text(to_yaml(cfg))
    assert load_config(tmp_path / "saved.yaml", schema=Config) == cfg


@pytest.mark.parametrize("override", [
    "sampling.steps=0", "sampling.steps=1001", "sampling.guidance_scale=-10", "sampling.guidance_scale=nan",
    "sampling.latent_tile_size=0", "sampling.latent_tile_overlap=24", "sampling.latent_tile_overlap=-1",
    "sampling.tile_batch=0", "flow.raft_iters=0", "flow.occlusion_alpha=-0.1", "flow.occlusion_beta=inf",
    "decode.cfw_weight=nan", "decode.tile_size=100", "decode.tile_size=0", "decode.tile_stride=0",
    "decode.tile_stride=257", "chunk.frames=0", "chunk.overlap=5", "chunk.anchor_strength=1.5", "infer.scale=0",
    "infer.min_short_side=-1", "infer.device=gpu", "infer.devices=0", "output.crf=52",
    # every choice is a typing.Literal
    "sampling.guidance_variant=corrected", "sampling.pixel_tiling=tiles", "sampling.flow_tile_crop=aligned",
    "flow.method=farneback", "flow.raft_input_range=half", "flow.precision=fp16", "flow.resolution=hr",
    "decode.color_fix=histogram", "chunk.short_sequences=pad", "infer.upsample_mode=nearest",
    "infer.padding=none", "infer.precision=half",
])
def test_every_bad_inference_value_fails_at_load_naming_its_key(override):
    key = override.split("=")[0]
    with pytest.raises(ValueError, match=rf"^{re.escape(key)}: ") as err:
        load_config(TINY, [override])
    assert "\n" not in str(err.value)  # one line


def test_sections_built_directly_are_validated_too():
    with pytest.raises(ValueError, match=r"^sampling.pixel_tiling: must be one of \['authors', 'frame'\]"):
        SamplingConfig(pixel_tiling="tiles")
    with pytest.raises(ValueError, match="^sampling.steps: "):
        dataclasses.replace(SamplingConfig(), steps=0)


def test_infer_yaml_documents_every_inference_key_at_its_default():
    text = (ROOT / "configs/infer.yaml").read_text()
    assert load_config(ROOT / "configs/infer.yaml") == Config()
    for section in ("sampling", "flow", "decode", "chunk", "infer"):
        for f in dataclasses.fields(getattr(Config(), section)):
            assert re.search(rf"^  {f.name}: ", text, re.M), f"{section}.{f.name} is not in configs/infer.yaml"
    defaults = Config()  # the released script's settings
    assert (defaults.sampling.pixel_tiling, defaults.decode.tile_size, defaults.decode.tile_stride) == (
        "authors", 960, 750)
    assert (defaults.infer.padding, defaults.chunk.short_sequences, defaults.flow.precision) == (
        "authors", "repeat", "autocast")
