"""Training of both stages on CPU with the tiny configs (issue 5): runs, checkpoints, resume, logging, frozen vs
trained parameters, overfitting a fixed batch, up-front errors, full-size trainable counts (meta), the CLI.

LPIPS is off in every tiny run (``losses.lpips: 0`` in configs/tiny_stage2.yaml): its VGG backbone is a
torchvision download that is not available offline (test_losses.py checks the wrapper with a local file). The
consistency loss uses OpenCV DIS flow (no weights) instead of SpyNet for the same reason.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import default_collate

from conftest import ROOT
from conftest import millions as _millions
from mgld.config import load_config
from mgld.io.frames import InputError
from mgld.models import build_denoiser, build_vae
from mgld.models.discriminator import PatchDiscriminator
from mgld.training import LossConfig, Stage1System, Stage2System, build_stage1, build_stage2, train
from mgld.training.config import OptimConfig, load_train_config
from mgld.training.data import write_synthetic_sequences
from mgld.training.runner import prepare_run_dir
from mgld.weights.checkpoints import CheckpointError, load_state_dict_file
from training_helpers import tiny_config

CONFIGS = ROOT / "configs"
T = 5
pytestmark = pytest.mark.usefixtures("one_thread_module")


class CaptureStart(Callback):
    """Records the step and the optimizer states a (resumed) run starts from."""

    def on_train_start(self, trainer, pl_module):
        self.step = trainer.global_step
        self.states = [copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers]


def _initial_state(build, cfg) -> dict:
    pl.seed_everything(cfg.trainer.seed, workers=True)  # as train() does before building
    system, _ = build(cfg)
    return {k: v.clone() for k, v in system.state_dict().items()}


def _assert_frozen_kept_trained_changed(initial: dict, final: dict, trained_prefixes: tuple[str, ...]):
    trained = [k for k in final if k.startswith(trained_prefixes) and "running" not in k and "num_batches" not in k]
    assert trained, "no trained parameters in the checkpoint"
    changed = [k for k in trained if not torch.equal(final[k], initial[k])]
    assert len(changed) >= 0.5 * len(trained), f"only {len(changed)} of {len(trained)} trained tensors changed"
    frozen = [k for k in final if not k.startswith(trained_prefixes)]
    for key in frozen:
        assert torch.equal(final[key], initial[key]), f"frozen {key} changed"
    return frozen


def _same_optimizer_state(a: dict, b: dict) -> bool:
    if a["state"].keys() != b["state"].keys():
        return False
    return all(torch.equal(a["state"][i][k], b["state"][i][k]) for i in a["state"] for k in a["state"][i])


# ---------------------------------------------------------------------------------------------------------
# Stage 1
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stage1_run(data, tmp_path_factory):
    cfg = tiny_config(1, data, tmp_path_factory.mktemp("runs") / "stage1", "trainer.max_steps=3")
    initial = _initial_state(build_stage1, cfg)
    run_dir = train(cfg, enable_progress_bar=False)
    return cfg, run_dir, initial


def test_stage1_trains_checkpoints_and_logs(stage1_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mgld.weights.loading import load_denoiser

    cfg, run_dir, initial = stage1_run
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step00000002.ckpt", "step00000003.ckpt"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 3
    frozen = _assert_frozen_kept_trained_changed(initial, last["state_dict"], Stage1System.trained_prefixes)
    assert any(k.startswith("denoiser.unet.base.") for k in frozen) and any(k.startswith("vae.") for k in frozen)
    assert load_train_config(run_dir / "config.yaml") == cfg  # the run folder keeps the resolved config
    denoiser, _ = load_denoiser(run_dir / "weights", cfg.model)  # exported as a converted mgld folder
    assert torch.equal(denoiser.state_dict()["cond_encoder.fea_tran.0.out_layers.3.weight"],
                       last["state_dict"]["denoiser.cond_encoder.fea_tran.0.out_layers.3.weight"])
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    assert {"train/loss", "lr-AdamW"} <= set(events.Tags()["scalars"])
    assert {"images/lq_output_gt", "images/temporal_profile"} <= set(events.Tags()["images"])
    strip = events.Images("images/lq_output_gt")[0]
    assert (strip.width, strip.height) == (T * 32, 3 * 32)  # LQ / output / GT rows of 5 frames


def test_stage1_resume_continues_at_the_saved_step_with_the_saved_optimizer_state(stage1_run):
    cfg, run_dir, _ = stage1_run
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    with pytest.raises(FileExistsError, match="--resume"):
        prepare_run_dir(cfg, resume=False)
    capture = CaptureStart()
    cfg5 = tiny_config(1, Path(cfg.data.root).parent, run_dir, "trainer.max_steps=5")
    train(cfg5, resume=True, callbacks=[capture], enable_progress_bar=False)
    assert capture.step == 3
    assert _same_optimizer_state(capture.states[0], saved["optimizer_states"][0])
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert resumed["global_step"] == 5
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step00000002.ckpt", "step00000003.ckpt", "step00000004.ckpt", "step00000005.ckpt"]
    assert next(iter(resumed["optimizer_states"][0]["state"].values()))["step"].item() == 5


def test_stage1_overfits_a_fixed_batch(data, tmp_path):
    cfg = tiny_config(1, data, tmp_path / "run")
    system, datamodule = build_stage1(cfg)
    batch = default_collate([datamodule.dataset[0]])
    optimizer = torch.optim.Adam(system.trainable, lr=2e-3)
    losses = []
    for _ in range(25):
        torch.manual_seed(0)  # same timesteps, noise and posterior samples every step
        loss = system.compute_loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_per_frame_timesteps_and_frozen_norm_are_the_default_and_the_fixes_are_options(data, tmp_path):
    system, _ = build_stage1(tiny_config(1, data, tmp_path / "run"))  # the authors' run
    t = system.sample_timesteps(3, T)
    assert t.shape == (15,) and len(set(t.tolist())) > 3  # independent per frame
    norm = system.denoiser.unet.temporal.attention.norm
    assert not norm.weight.requires_grad and system.denoiser.unet.temporal.attention.temporal_alpha.requires_grad
    fixed = tiny_config(1, data, tmp_path / "run", "stage1.timesteps=clip", "stage1.train_temporal_norm=true")
    system, _ = build_stage1(fixed)
    clip = system.sample_timesteps(3, T).view(3, T)
    assert (clip == clip[:, :1]).all() and len(set(clip[:, 0].tolist())) > 1  # one timestep per clip
    assert system.denoiser.unet.temporal.attention.norm.weight.requires_grad


# ---------------------------------------------------------------------------------------------------------
# Stage 2
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A tiny diffusers-layout SD folder holding only ``vae/`` (all stage 2 needs)."""
    folder = tmp_path_factory.mktemp("sd")
    torch.manual_seed(123)
    build_vae(load_config(CONFIGS / "tiny.yaml").model).base.save_pretrained(folder / "vae")
    return folder


@pytest.fixture(scope="module")
def stage2_run(data, sd_folder, tmp_path_factory):
    cfg = tiny_config(2, data, tmp_path_factory.mktemp("runs") / "stage2", "trainer.max_steps=3",
                   "losses.disc_start=1", f"init.sd_checkpoint={sd_folder}")
    initial = _initial_state(build_stage2, cfg)
    run_dir = train(cfg, enable_progress_bar=False)
    return cfg, run_dir, initial


def test_stage2_trains_with_lean_checkpoints_and_gan_after_disc_start(stage2_run, sd_folder):
    cfg, run_dir, initial = stage2_run
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 3  # generator updates; the discriminator's steps are not counted
    # the frozen VAE comes from the SD folder, so checkpoints keep only what is trained
    assert all(k.startswith(Stage2System.trained_prefixes) for k in last["state_dict"])
    _assert_frozen_kept_trained_changed(initial, last["state_dict"], Stage2System.trained_prefixes)
    opt_g, opt_d = (next(iter(s["state"].values()))["step"].item() for s in last["optimizer_states"])
    assert (opt_g, opt_d) == (3, 3)  # the discriminator's Adam is stepped from step 0 (zero gradients before 1)
    exported = load_state_dict_file(run_dir / "weights" / "vae.safetensors")
    sd_vae = load_state_dict_file(sd_folder / "vae" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(exported[f"base.{k}"], v) for k, v in sd_vae.items())  # frozen: bit-identical to SD


def test_stage2_resume_rebuilds_the_frozen_part_and_continues(stage2_run):
    cfg, run_dir, _ = stage2_run
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    capture = CaptureStart()
    overrides = ["trainer.max_steps=4", "losses.disc_start=1", f"init.sd_checkpoint={cfg.init.sd_checkpoint}"]
    train(tiny_config(2, Path(cfg.data.root).parent, run_dir, *overrides), resume=True, callbacks=[capture],
          enable_progress_bar=False)
    assert capture.step == 3
    assert all(_same_optimizer_state(a, b) for a, b in zip(capture.states, saved["optimizer_states"]))
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert resumed["global_step"] == 4
    assert [next(iter(s["state"].values()))["step"].item() for s in resumed["optimizer_states"]] == [4, 4]


def test_stage2_overfits_a_fixed_batch(data, tmp_path):
    from mgld.training.common import prepare_clips

    system, datamodule = build_stage2(tiny_config(2, data, tmp_path / "run", "losses.consistency_variant=fixed"))
    batch = default_collate([datamodule.dataset[0]])
    x_gt, x_lq = prepare_clips(batch["gt"], batch["lq"])
    latent = batch["latent"].flatten(0, 1)
    optimizer = torch.optim.Adam(system.decoder_parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        terms = system.generator_loss(system.reconstruct(x_lq, latent, T), x_gt, T, disc_factor=0.0)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        losses.append(terms["total"].item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert terms["consistency"].item() > 0 and terms["lpips"].item() == 0  # (random) SpyNet on; LPIPS off in tiny


# ---------------------------------------------------------------------------------------------------------
# Full size, errors, CLI
# ---------------------------------------------------------------------------------------------------------


def test_full_size_systems_train_the_spec_parameters():
    model = load_train_config(CONFIGS / "stage1.yaml").model
    with torch.device("meta"):
        denoiser, vae = build_denoiser(model), build_vae(model)
    stage1 = Stage1System(denoiser, vae)
    trained = {n: p for n, p in stage1.named_parameters() if p.requires_grad}
    assert _millions(p for n, p in trained.items() if n.startswith("denoiser.unet.sft.")) == 53.02
    assert _millions(p for n, p in trained.items() if n.startswith("denoiser.unet.temporal.")) == 16.39
    assert _millions(p for n, p in trained.items() if n.startswith("denoiser.cond_encoder.")) == 52.49
    assert _millions(trained.values()) == 121.90 and _millions(stage1.trainable) == 121.90

    stage2 = Stage2System(vae, PatchDiscriminator(), losses=LossConfig(lpips=0, consistency=0),
                          optim=OptimConfig(lr=5e-5, betas=[0.5, 0.9], weight_decay=0.0, accumulate_grad_batches=1))
    trained = {n: p for n, p in stage2.named_parameters() if p.requires_grad}
    assert _millions(p for n, p in trained.items() if n.startswith("vae.fusion.")) == 25.07
    assert _millions(p for n, p in trained.items() if n.startswith("vae.temporal.")) == 6.25
    assert _millions(p for n, p in trained.items() if n.startswith("discriminator.")) == 2.77
    assert _millions(trained.values()) == 34.09


def test_input_errors_come_before_any_model_is_built(data, tmp_path, no_model_building):
    out = tmp_path / "run"
    with pytest.raises(InputError, match="dataset folder not found"):
        build_stage1(tiny_config(1, data, out, f"data.root={tmp_path / 'missing'}"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty folder"):
        build_stage2(tiny_config(2, data, out, f"data.root={tmp_path / 'empty'}"))
    with pytest.raises(FileNotFoundError, match="SD checkpoint not found"):
        build_stage1(tiny_config(1, data, out, f"init.sd_checkpoint={tmp_path / 'v2-1.ckpt'}"))
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}}, tmp_path / "not_sd.ckpt")
    with pytest.raises(CheckpointError, match="not_sd.ckpt"):
        build_stage1(tiny_config(1, data, out, f"init.sd_checkpoint={tmp_path / 'not_sd.ckpt'}"))
    wide = load_config(CONFIGS / "tiny.yaml", ["model.vae.ch=64"]).model
    build_vae(wide).base.save_pretrained(tmp_path / "wide_sd" / "vae")  # the test's own import, not patched
    with pytest.raises(CheckpointError, match="shape mismatches"):
        build_stage2(tiny_config(2, data, out, f"init.sd_checkpoint={tmp_path / 'wide_sd'}"))
    with pytest.raises(FileNotFoundError, match="losses.lpips=0"):
        build_stage2(tiny_config(2, data, out, "losses.lpips=0.5", f"losses.lpips_backbone={tmp_path / 'vgg.pth'}"))


@pytest.mark.parametrize("name", ["stage1", "stage2", "tiny_stage1", "tiny_stage2"])
def test_common_overrides_work_in_every_training_config(name):
    cfg = load_train_config(CONFIGS / f"{name}.yaml", ["data.root=/d", "trainer.max_steps=7", "output_dir=/o"])
    assert (cfg.data.root, cfg.trainer.max_steps, cfg.output_dir) == ("/d", 7, "/o")


def test_stage2_config_has_the_spec_values():
    cfg = load_train_config(CONFIGS / "stage2.yaml")
    losses = cfg.losses
    weights = (losses.l1, losses.lpips, losses.frame_difference, losses.consistency, losses.gan)
    assert weights == (1, 0.5, 0.5, 0.5, 0.025)
    assert (losses.sobel_weight, losses.disc_start, losses.flow.method) == (3.0, 501, "spynet")
    assert (cfg.optim.lr, cfg.optim.betas, cfg.optim.accumulate_grad_batches) == (5e-5, [0.5, 0.9], 8)
    cfg1 = load_train_config(CONFIGS / "stage1.yaml")
    assert (cfg1.optim.lr, cfg1.optim.weight_decay, cfg1.optim.accumulate_grad_batches) == (5e-5, 0.01, 4)
    assert (cfg1.data.crop_size, cfg1.trainer.checkpoint_every_n_steps, cfg1.model.num_frames) == (512, 3000, 5)


def test_cli_help_and_print_config(capsys):
    script = ROOT / "scripts" / "train.py"
    run = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=True)
    help_text = run.stdout
    for flag in ("--config", "--resume", "--print-config", "key=value", "data.root", "trainer.max_steps", "output_dir"):
        assert flag in help_text
    from mgld.cli.train import main

    assert main(["--config", str(CONFIGS / "tiny_stage2.yaml"), "--print-config", "trainer.max_steps=9"]) == 0
    printed = capsys.readouterr().out
    assert "stage: 2" in printed and "max_steps: 9" in printed and "model_channels: 32" in printed
    with pytest.raises(ValueError, match="not key=value"):  # the loader's one check (exit 2 through mgld)
        main(["--config", str(CONFIGS / "tiny_stage1.yaml"), "not-an-override"])


def test_generate_latents_writes_stage2_inputs_and_resumes(tmp_path):
    from mgld.config import Config
    from mgld.data.degradations import RealBasicVSRDegradation
    from mgld.data.stage2 import Stage2ClipDataset
    from mgld.pipeline.pipeline import MGLDPipeline
    from mgld.training.latents import generate_latents

    cfg = load_train_config(CONFIGS / "tiny_stage1.yaml", ["sampling.steps=2", "infer.min_short_side=0"])
    config = Config(model=cfg.model, sampling=cfg.sampling, flow=cfg.flow, decode=cfg.decode, chunk=cfg.chunk,
                    infer=cfg.infer)
    pipe = MGLDPipeline(build_denoiser(cfg.model), build_vae(cfg.model), config)
    gt = write_synthetic_sequences(tmp_path / "gt", num_sequences=1, num_frames=11, size=(32, 48))
    out = tmp_path / "gen"
    counts = generate_latents(pipe, gt, out, RealBasicVSRDegradation(), T, seed=3)
    assert counts == {"done": 2, "skipped": 0}  # frames 0-4 and 5-9; frame 10 is no whole segment
    dataset = Stage2ClipDataset(gt, out / "lq", out / "latents", T)
    item = dataset[1]
    assert item["lq"].shape == (T, 3, 8, 12) and item["latent"].shape == (T, 4, 4, 6)
    assert len(list((out / "preview" / "100").glob("*.png"))) == 10
    first = item["latent"].clone()
    (out / "latents" / "100" / "00000007.npy").unlink()  # an interrupted segment
    assert generate_latents(pipe, gt, out, RealBasicVSRDegradation(), T, seed=3) == {"done": 1, "skipped": 1}
    torch.testing.assert_close(dataset[1]["latent"], first)  # same seeds: the redone segment is identical


def test_frozen_networks_stay_in_eval_mode(tiny_model_cfg):
    class FlowWithBatchNorm(torch.nn.Module):  # like RAFT's context encoder
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.BatchNorm2d(2)

    stage1 = Stage1System(build_denoiser(tiny_model_cfg), build_vae(tiny_model_cfg)).train()
    assert stage1.denoiser.training and not stage1.vae.training
    stage2 = Stage2System(build_vae(tiny_model_cfg), PatchDiscriminator(3, 8, 2), flow_estimator=FlowWithBatchNorm(),
                          losses=LossConfig(lpips=0),
                          optim=OptimConfig(lr=5e-5, betas=[0.5, 0.9], weight_decay=0.0, accumulate_grad_batches=1)
                          ).train()
    assert stage2.vae.training and stage2.discriminator.training and not stage2.flow_estimator.training


# ---------------------------------------------------------------------------------------------------------
# The authors' run by default, the fixes as named options (issue 11 §1.5)
# ---------------------------------------------------------------------------------------------------------


def _flat(cfg, skip=()) -> dict:
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(OmegaConf.structured(cfg))
    out = {}

    def walk(node, prefix):
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, f"{key}.")
            elif not key.startswith(skip):
                out[key] = v

    walk(container, "")
    return out


INFERENCE_SECTIONS = ("sampling.", "flow.", "decode.", "chunk.", "infer.")


def test_authors_configs_hold_the_authors_run_and_equal_the_schema_defaults():
    from mgld.training.config import Stage1TrainConfig, Stage2TrainConfig

    s1 = load_train_config(CONFIGS / "stage1.yaml")
    assert (s1.stage1.timesteps, s1.stage1.train_temporal_norm, s1.stage1.mid_from_sd) == ("frame", False, False)
    for stage in (s1.data.degradation.stage1, s1.data.degradation.stage2):
        assert (stage.blur.beta_variant, stage.codec.color_order) == ("authors", "authors")
    assert (s1.data.exclude, s1.data.exclude_by) == (["000", "011", "015", "020"], "name")
    s2 = load_train_config(CONFIGS / "stage2.yaml")
    assert (s2.losses.consistency_variant, s2.losses.reduction, s2.losses.flow.method) == ("authors", "authors",
                                                                                            "spynet")
    assert (s2.data.exclude_by, s2.discriminator.sync_batchnorm) == ("prefix", False)
    skip = (*INFERENCE_SECTIONS, "output_dir", "data.root", "data.generated_root")
    assert _flat(s1, skip) == _flat(Stage1TrainConfig(), skip)  # the schema defaults are the authors' run too
    assert _flat(s2, skip) == _flat(Stage2TrainConfig(), skip)


def test_fixed_configs_change_exactly_the_named_fixes():
    def changed(name: str, base: str) -> dict:
        a, b = _flat(load_train_config(CONFIGS / f"{name}.yaml")), _flat(load_train_config(CONFIGS / f"{base}.yaml"))
        return {k: v for k, v in a.items() if v != b[k]}



    d1 = changed("stage1_fixed", "stage1")
    expected = {
        "stage1.timesteps": "clip", "stage1.train_temporal_norm": True, "stage1.mid_from_sd": True,
        "data.degradation.stage1.blur.beta_variant": "fixed", "data.degradation.stage1.codec.color_order": "fixed",
        "data.degradation.stage2.blur.beta_variant": "fixed", "data.degradation.stage2.codec.color_order": "fixed",
        "sampling.steps": 50, "sampling.guidance_scale": 10.0,
    }
    expected.update({"flow.resolution": "lr", "infer.upsample_mode": "bicubic"})
    assert d1 == expected
    d2 = changed("stage2_fixed", "stage2")
    assert d2 == {"losses.consistency_variant": "fixed", "losses.reduction": "mean",
                  "discriminator.sync_batchnorm": True}
    for name, fixes in (("stage1_fixed", d1), ("stage2_fixed", d2)):  # every fix is named in a comment
        lines = [line for line in (CONFIGS / f"{name}.yaml").read_text().splitlines() if "# FIX:" in line]
        for key in fixes:
            assert any(line.lstrip().startswith(key.rsplit(".", 1)[-1]) or f"{key.rsplit('.', 1)[-1]}:" in line
                       for line in lines), key


def test_latent_generation_settings_reach_the_pipeline(tmp_path):
    """configs/stage1.yaml samples the stage-2 latents as the authors' w_latent script (docs/training.md §4)."""

    from mgld.cli.generate_latents import build_pipeline

    cfg = load_train_config(CONFIGS / "stage1.yaml")
    assert (cfg.sampling.steps, cfg.sampling.guidance_scale, cfg.flow.method) == (200, 1.0, "raft")
    fixed = load_train_config(CONFIGS / "stage1_fixed.yaml")
    assert (fixed.sampling.steps, fixed.sampling.guidance_scale) == (50, 10.0)
    tiny = load_train_config(CONFIGS / "tiny_stage1.yaml", ["infer.random_weights=true", "sampling.steps=3"])
    pipe = build_pipeline(tiny, None, None)
    assert pipe.config.sampling.guidance_scale == 1.0 and pipe.config.sampling.steps == 3
    assert (pipe.config.infer.scale, pipe.config.infer.min_short_side) == (4, 0)
    assert (cfg.flow.resolution, cfg.infer.upsample_mode) == ("upsampled", "bilinear")  # the w_latent script
    assert (fixed.flow.resolution, fixed.infer.upsample_mode) == ("lr", "bicubic")  # as inference
    assert (pipe.config.flow.resolution, pipe.config.infer.upsample_mode) == ("upsampled", "bilinear")


# ---------------------------------------------------------------------------------------------------------
# Stage-2 details (issue 11 §1.6)
# ---------------------------------------------------------------------------------------------------------


def test_discriminator_adam_steps_with_zero_gradients_before_disc_start(data, tmp_path):
    cfg = tiny_config(2, data, tmp_path / "run", "trainer.max_steps=2", "losses.disc_start=3")
    initial = _initial_state(build_stage2, cfg)
    run_dir = train(cfg, enable_progress_bar=False)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    disc = {k: v for k, v in last["state_dict"].items() if k.startswith("discriminator.") and "running" not in k
            and "num_batches" not in k}
    assert disc and all(torch.equal(v, initial[k]) for k, v in disc.items())  # zero gradients: no update ...
    state_g, state_d = (s["state"] for s in last["optimizer_states"])
    assert {int(s["step"]) for s in state_d.values()} == {2} == {int(s["step"]) for s in state_g.values()}  # counted
    assert all(not s["exp_avg"].any() and not s["exp_avg_sq"].any() for s in state_d.values())
    # the authors' discriminator also sees every batch before disc_start (BatchNorm statistics move)
    running = [k for k in last["state_dict"] if k.startswith("discriminator.") and k.endswith("running_mean")]
    assert running and not torch.equal(last["state_dict"][running[0]], initial[running[0]])


def test_stage2_lq_is_not_clamped_but_stage1_lq_is():
    from mgld.training.common import prepare_clips

    gt = torch.zeros(1, T, 3, 16, 16)
    lq = torch.zeros(1, T, 3, 4, 4)
    lq[..., ::2, :] = 1.0  # stripes: bicubic overshoots
    _, stage1 = prepare_clips(gt, lq)
    _, stage2 = prepare_clips(gt, lq, clamp_lq=False)
    assert stage1.min() == -1 and stage1.max() == 1
    assert stage2.max() > 1.05 and stage2.min() < -1.05
    torch.testing.assert_close(stage2.clamp(-1, 1), stage1)


def test_global_batchnorm_is_batchnorm_in_one_process():
    from mgld.training.distributed import GlobalBatchNorm2d, convert_global_batchnorm

    disc = PatchDiscriminator(3, 8, 2)
    reference = copy.deepcopy(disc)
    convert_global_batchnorm(disc)
    assert sum(isinstance(m, GlobalBatchNorm2d) for m in disc.modules()) == 2
    assert all(torch.equal(a, b) for a, b in zip(disc.state_dict().values(), reference.state_dict().values()))
    x = torch.randn(6, 3, 32, 32)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, ref = disc(x1), reference(x2)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    out.square().mean().backward()
    ref.square().mean().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-6, rtol=1e-4)
    for (name, a), b in zip(disc.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)  # running statistics too
    disc.eval()
    reference.eval()
    torch.testing.assert_close(disc(x), reference(x), atol=1e-5, rtol=1e-5)
