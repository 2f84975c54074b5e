"""Loading, converting and saving weights: official layouts, strictness, safety, round trips."""

import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from conftest import KEYS_DIR, ROOT, load_oracle, subprocess_env
from mgld.config import ModelConfig
from mgld.models import build_denoiser, build_vae
from mgld.weights.checkpoints import (
    DENOISER_FILE,
    CheckpointError,
    check_state_dict,
    load_state_dict_file,
    load_torch_file,
    save_model_folder,
)
from mgld.weights.convert import ConversionError, official_denoiser_state_dict, official_vae_state_dict
from mgld.weights.loading import convert_official, init_denoiser_from_sd, init_vae_from_sd, load_denoiser, load_vae
from mgld.weights.text_context import empty_prompt_ids
from official_factory import (
    official_stage1_state_dict,
    openclip_penultimate,
    sd_ldm_state_dict,
    tiny_openclip_tower,
    write_lightning_checkpoint,
)
from official_factory import (
    official_vae_state_dict as official_vae_fixture,
)


def _meta_state_dict(tsv_name: str) -> dict:
    sd = {}
    for line in (KEYS_DIR / tsv_name).read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            sd[key] = torch.empty(eval(shape), device="meta")
    return sd


def test_full_size_official_key_lists_convert_exactly():
    cfg = ModelConfig()
    stage1 = _meta_state_dict("stage1_unet.tsv") | _meta_state_dict("stage1_structcond.tsv")
    assert len(stage1) == 876 + 200
    converted = official_denoiser_state_dict(stage1, cfg, context=torch.empty(1, 77, 1024, device="meta"))
    vae_sd = official_vae_state_dict(_meta_state_dict("video_vae.tsv"), cfg)
    with torch.device("meta"):
        check_state_dict(build_denoiser(cfg), converted, "stage1 key list")  # raises on any difference
        check_state_dict(build_vae(cfg), vae_sd, "video VAE key list")
    assert len(converted) == 876 + 200 + 1
    assert len(vae_sd) == 363


def _tiny_models(cfg):
    torch.manual_seed(1)
    denoiser, vae = build_denoiser(cfg).eval(), build_vae(cfg).eval()
    with torch.no_grad():  # non-trivial temporal blends so the round trip covers them
        for module in list(denoiser.modules()) + list(vae.modules()):
            if hasattr(module, "temporal_alpha"):
                module.temporal_alpha.fill_(0.4)
        denoiser.text_context.normal_()
    return denoiser, vae


def _run(denoiser, vae, num_frames=5):
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(num_frames, 4, 16, 16, generator=g), torch.randn(num_frames, 4, 16, 16, generator=g)
    images = torch.rand(num_frames, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        eps = denoiser(x, torch.tensor([321]), z, num_frames)
        posterior, feats = vae.encode(images)
        decoded = vae.decode(posterior.mean, feats, num_frames)
    return eps, decoded


def test_converted_folder_round_trips(tmp_path, tiny_model_cfg):
    denoiser, vae = _tiny_models(tiny_model_cfg)
    save_model_folder(tmp_path / "w", tiny_model_cfg, denoiser=denoiser, vae=vae, provenance={"test": True})
    files = sorted(p.name for p in (tmp_path / "w").iterdir())
    assert files == ["config.yaml", "denoiser.safetensors", "vae.safetensors"]
    denoiser2, cfg2 = load_denoiser(tmp_path / "w")
    vae2, _ = load_vae(tmp_path / "w", tiny_model_cfg)
    assert cfg2 == tiny_model_cfg
    for a, b in zip(_run(denoiser, vae), _run(denoiser2, vae2)):
        assert torch.equal(a, b)


def test_folder_that_does_not_fit_the_config_is_refused(tmp_path, tiny_model_cfg):
    denoiser, vae = _tiny_models(tiny_model_cfg)
    save_model_folder(tmp_path, tiny_model_cfg, denoiser=denoiser)
    other = ModelConfig(unet=type(tiny_model_cfg.unet)(**{**vars(tiny_model_cfg.unet), "sft_hidden": 16}),
                        cond_encoder=tiny_model_cfg.cond_encoder, vae=tiny_model_cfg.vae)
    with pytest.raises(CheckpointError, match=r"does not fit the config: unet\.sft_hidden: weights 32 vs config 16"):
        load_denoiser(tmp_path, other)


def test_truncated_wrong_and_foreign_state_dicts_name_file_and_keys(tmp_path, tiny_model_cfg):
    denoiser, _ = _tiny_models(tiny_model_cfg)
    save_model_folder(tmp_path, tiny_model_cfg, denoiser=denoiser)
    path = tmp_path / DENOISER_FILE
    good = load_state_dict_file(path)

    truncated = {k: v for k, v in good.items() if not k.startswith("unet.sft.up.")}
    save_file(truncated, path)
    missing = r"denoiser\.safetensors.*missing keys \['unet\.sft\.up\.0\.0\.mlp_beta\.bias'"
    with pytest.raises(CheckpointError, match=missing):
        load_denoiser(tmp_path)

    wrong = dict(good, **{"unet.temporal.conv0.temporal_conv.weight": torch.zeros(64, 64, 5, 1, 1)})
    save_file(wrong, path)
    with pytest.raises(CheckpointError, match=r"shape mismatches.*temporal_conv\.weight: file \(64, 64, 5, 1, 1\)"):
        load_denoiser(tmp_path)

    foreign = {"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.bias": torch.zeros(10)}
    save_file(foreign, path)
    with pytest.raises(CheckpointError, match=r"unexpected keys \['conv1\.weight', 'fc\.bias'\] \(2\)"):
        load_denoiser(tmp_path)

    path.write_bytes(b"\x00" * 20)  # a truncated download
    with pytest.raises(CheckpointError, match="denoiser.safetensors: not a readable safetensors file"):
        load_denoiser(tmp_path)

    with pytest.raises(CheckpointError, match="broken.ckpt: truncated or damaged"):
        (tmp_path / "broken.ckpt").write_bytes(b"PK\x03\x04 garbage")
        load_torch_file(tmp_path / "broken.ckpt")


def _damaged_zip_pickle(path, good):
    import zipfile

    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            dst.writestr(item, data[: len(data) // 2] if item.filename.endswith("data.pkl") else data)


@pytest.mark.parametrize("damage", ["empty", "truncated_zip", "random_bytes", "damaged_pickle", "truncated_legacy",
                                    "foreign_legacy"])
def test_corrupt_checkpoints_name_the_file_and_never_suggest_an_unsafe_load(tmp_path, damage):
    good, legacy = tmp_path / "good.ckpt", tmp_path / "legacy.pth"
    state = {"state_dict": {"w": torch.randn(64, 64)}}
    torch.save(state, good)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    path = tmp_path / f"{damage}.ckpt"
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated_zip":
        path.write_bytes(good.read_bytes()[:3000])
    elif damage == "random_bytes":
        path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                       dtype=torch.uint8).numpy().tobytes())
    elif damage == "damaged_pickle":
        _damaged_zip_pickle(path, good)
    elif damage == "truncated_legacy":
        path.write_bytes(legacy.read_bytes()[:3000])
    else:
        torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Foreign()}, path,
                   _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_file(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert not any(word in message for word in ("weights_only", "trusted source", "arbitrary code"))
    if damage == "foreign_legacy":
        assert "refusing to unpickle" in message and "_Foreign" in message
    assert torch.equal(load_state_dict_file(legacy)["w"], state["state_dict"]["w"])  # legacy format is fine


def test_wrong_checkpoints_errors_name_the_file(tmp_path, oracle_cfg):
    vae, stage1 = tmp_path / "video_vae_cfw.ckpt", tmp_path / "stage1.ckpt"
    torch.save({"state_dict": official_vae_fixture()}, vae)
    torch.save({"state_dict": official_stage1_state_dict(with_tower=False, with_raft=False)}, stage1)
    for call, path in ((lambda: load_denoiser(vae, oracle_cfg), vae), (lambda: load_vae(stage1, oracle_cfg), stage1),
                       (lambda: convert_official(tmp_path / "w", stage1=vae, cfg=oracle_cfg), vae),
                       (lambda: convert_official(tmp_path / "w", vae=stage1, cfg=oracle_cfg), stage1),
                       (lambda: init_denoiser_from_sd(vae, oracle_cfg), vae),
                       (lambda: load_denoiser(stage1, oracle_cfg), stage1)):  # no OpenCLIP tower
        with pytest.raises(ConversionError) as err:
            call()
        assert str(err.value).startswith(f"{path}: "), str(err.value)


class _Foreign:
    pass


def test_pickles_with_foreign_objects_are_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": _Foreign()}, path)
    with pytest.raises(CheckpointError, match=r"refusing to unpickle.*test_checkpoints\._Foreign"):
        load_torch_file(path)
    with pytest.raises(pickle.UnpicklingError):  # and plain weights-only loading refuses it too
        torch.load(path, weights_only=True)


def test_lightning_checkpoint_loads_and_matches_the_oracle(tmp_path, oracle_cfg):
    ckpt = tmp_path / "stage1.ckpt"
    write_lightning_checkpoint(ckpt, official_stage1_state_dict(with_tower=False), tmp_path)
    with pytest.raises(pickle.UnpicklingError):  # the reason the narrow allow-list exists
        torch.load(ckpt, weights_only=True)
    raw = load_torch_file(ckpt)
    assert "ModelCheckpoint" in type(next(iter(raw["callbacks"]))).__name__ + str(next(iter(raw["callbacks"])))

    fixture = load_oracle("unet.pt")
    inputs = fixture["inputs"]
    denoiser, _ = load_denoiser(ckpt, oracle_cfg, context=inputs["context"])
    with torch.no_grad():
        eps = denoiser(inputs["x_t"], inputs["t"], inputs["lr_latent"], oracle_cfg.num_frames)
    torch.testing.assert_close(eps, fixture["outputs"]["eps"], rtol=1e-4, atol=1e-4)


def test_convert_official_end_to_end(tmp_path, oracle_cfg):
    stage1, vae = tmp_path / "mgldvsr_unet.ckpt", tmp_path / "video_vae_cfw.ckpt"
    write_lightning_checkpoint(stage1, official_stage1_state_dict(), tmp_path)
    torch.save({"state_dict": official_vae_fixture(with_loss=True), "epoch": 3}, vae)
    out = convert_official(tmp_path / "converted", stage1=stage1, vae=vae, cfg=oracle_cfg)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "denoiser.safetensors", "flow.safetensors",
                                                     "vae.safetensors"]

    denoiser, cfg = load_denoiser(out)
    video_vae, _ = load_vae(out)
    assert cfg == oracle_cfg
    _, tower = tiny_openclip_tower()
    expected_context = openclip_penultimate(tower, empty_prompt_ids())
    torch.testing.assert_close(denoiser.text_context, expected_context, rtol=1e-5, atol=1e-5)

    fixture = load_oracle("unet.pt")
    inputs = fixture["inputs"]
    with torch.no_grad():
        eps = denoiser(inputs["x_t"], inputs["t"], inputs["lr_latent"], cfg.num_frames, context=inputs["context"])
        vae_fix = load_oracle("vae.pt")
        posterior, feats = video_vae.encode(vae_fix["inputs"]["lr_images"])
        decoded = video_vae.decode(vae_fix["inputs"]["latents"], feats, cfg.num_frames, 1.0)
    torch.testing.assert_close(eps, fixture["outputs"]["eps"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(decoded, vae_fix["outputs"]["decoded"], rtol=1e-4, atol=1e-4)


def test_conversion_errors_are_explicit(oracle_cfg):
    with pytest.raises(ConversionError, match="no OpenCLIP text tower"):
        official_denoiser_state_dict(official_stage1_state_dict(with_tower=False), oracle_cfg)
    with pytest.raises(ConversionError, match="not an MGLD-VSR stage-1 checkpoint"):
        official_denoiser_state_dict(official_vae_fixture(), oracle_cfg)
    with pytest.raises(ConversionError, match="plain Stable Diffusion UNet"):
        official_denoiser_state_dict(sd_ldm_state_dict() | {"structcond_stage_model.x": torch.zeros(1)}, oracle_cfg)
    with pytest.raises(ConversionError, match=r"unexpected keys in a video-VAE checkpoint.*model\.diffusion"):
        official_vae_state_dict(official_vae_fixture() | {"model.diffusion_model.x": torch.zeros(1)}, oracle_cfg)


@pytest.mark.parametrize("mid_from_sd", [True, False])
def test_init_from_sd_ldm_checkpoint(tmp_path, oracle_cfg, mid_from_sd):
    sd = sd_ldm_state_dict()
    path = tmp_path / "v2-1_512-ema-pruned.ckpt"
    torch.save({"state_dict": sd}, path)
    denoiser = init_denoiser_from_sd(path, oracle_cfg, mid_from_sd=mid_from_sd)
    base = denoiser.unet.base
    torch.testing.assert_close(base.conv_in.weight, sd["model.diffusion_model.input_blocks.0.0.weight"])
    sd_mid_proj = sd["model.diffusion_model.middle_block.1.proj_out.weight"]
    if mid_from_sd:
        torch.testing.assert_close(base.mid_block.attentions[0].proj_out.weight, sd_mid_proj)
    else:  # the authors' run: shifted slots keep a fresh init with zeroed outputs
        assert base.mid_block.attentions[0].proj_out.weight.abs().sum() == 0
        assert base.mid_block.resnets[1].conv2.weight.abs().sum() == 0
    _, tower = tiny_openclip_tower()
    torch.testing.assert_close(denoiser.text_context, openclip_penultimate(tower, empty_prompt_ids()))
    assert denoiser.unet.temporal.conv0.temporal_alpha.item() == 0.0

    vae = init_vae_from_sd(path, oracle_cfg)
    torch.testing.assert_close(vae.base.encoder.conv_in.weight, sd["first_stage_model.encoder.conv_in.weight"])
    torch.testing.assert_close(
        vae.base.decoder.up_blocks[0].resnets[0].conv1.weight, sd["first_stage_model.decoder.up.3.block.0.conv1.weight"]
    )


def test_init_from_sd_diffusers_folder(tmp_path, tiny_model_cfg):
    from transformers import CLIPTextConfig, CLIPTextModel

    donor_denoiser, donor_vae = _tiny_models(tiny_model_cfg)
    donor_denoiser.unet.base.save_pretrained(tmp_path / "unet")
    donor_vae.base.save_pretrained(tmp_path / "vae")
    text = CLIPTextModel(CLIPTextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=1, max_position_embeddings=77)).eval()
    text.save_pretrained(tmp_path / "text_encoder")
    denoiser = init_denoiser_from_sd(tmp_path, tiny_model_cfg)
    vae = init_vae_from_sd(tmp_path, tiny_model_cfg)
    for a, b in zip(denoiser.unet.base.state_dict().values(), donor_denoiser.unet.base.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(vae.base.decoder.conv_out.weight, donor_vae.base.decoder.conv_out.weight)
    with torch.no_grad():
        expected = text(input_ids=empty_prompt_ids()).last_hidden_state
    torch.testing.assert_close(denoiser.text_context, expected)


def _script(*args, env=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def test_convert_script_and_offline_download_message(tmp_path, oracle_cfg):
    env = subprocess_env(MGLD_HOME=str(tmp_path / "home"))
    out = _script("scripts/download_weights.py", env=env)
    assert out.returncode == 1
    assert "mgldvsr_unet.ckpt" in out.stderr and str(tmp_path / "home" / "official") in out.stderr

    vae = tmp_path / "video_vae_cfw.ckpt"
    torch.save({"state_dict": official_vae_fixture()}, vae)
    config = tmp_path / "authors.yaml"
    from mgld.config import Config, to_yaml

    config.write_text(to_yaml(Config(model=oracle_cfg)))
    out = _script("scripts/convert_checkpoint.py", "--vae", str(vae), "--out", str(tmp_path / "w"),
                  "--config", str(config), env=env)
    assert out.returncode == 0, out.stderr
    loaded, _ = load_vae(tmp_path / "w")
    assert loaded.fusion["2"].dense[0].conv5.out_channels == 32
    out = _script("scripts/convert_checkpoint.py", "--vae", str(tmp_path / "missing.ckpt"), env=env)
    assert out.returncode == 1 and "missing.ckpt" in out.stderr
