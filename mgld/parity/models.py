"""Parity checks of the model fixtures (``unet.pt``, ``vae.pt``) against the authors' code.

The fixtures carry weights in the official checkpoint layout, so these checks exercise the
converter as well as the networks: the fixture state dict goes through
:func:`mgld.weights.convert.official_denoiser_state_dict` / :func:`~mgld.weights.convert.official_vae_state_dict`
and is loaded strictly.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mgld.config import CondEncoderConfig, ModelConfig, UNetConfig, VAEConfig
from mgld.models import build_denoiser, build_vae
from mgld.parity.registry import ParityRow, compare, load_fixture, register
from mgld.weights.checkpoints import load_into
from mgld.weights.convert import official_denoiser_state_dict, official_vae_state_dict


def _require(params: dict, key: str, expected, what: str) -> None:
    if key in params and params[key] != expected:
        raise NotImplementedError(f"{what}: {key}={params[key]!r} is not supported (only {expected!r})")


def authors_model_config(config: dict) -> ModelConfig:
    """Map the authors' configs (fixture ``config.json``: ``unet_config``, ``structcond_config``,
    ``vae_config``) onto :class:`~mgld.config.ModelConfig`."""
    u = config["unet_config"]["params"]
    for key, value in (("legacy", False), ("use_spatial_transformer", True), ("use_scale_shift_norm", False)):
        _require(u, key, value, "unet_config")
    head_ch = u.get("num_head_channels", -1)
    mid_ch = u["model_channels"] * u["channel_mult"][-1]
    unet = UNetConfig(
        in_channels=u["in_channels"], out_channels=u["out_channels"], model_channels=u["model_channels"],
        channel_mult=list(u["channel_mult"]), num_res_blocks=u["num_res_blocks"],
        attention_resolutions=list(u["attention_resolutions"]), num_head_channels=head_ch,
        num_heads=u.get("num_heads", -1), context_dim=u["context_dim"],
        transformer_depth=u.get("transformer_depth", 1),
        use_linear_projection=u.get("use_linear_in_transformer", False),
        cond_channels=u.get("semb_channels", 256),
        temporal_head_channels=head_ch if head_ch != -1 else mid_ch // u["num_heads"],
    )
    e = config["structcond_config"]["params"]
    for key, value in (("use_scale_shift_norm", False), ("resblock_updown", False), ("conv_resample", True)):
        _require(e, key, value, "structcond_config")
    encoder = CondEncoderConfig(
        in_channels=e["in_channels"], model_channels=e["model_channels"], out_channels=e["out_channels"],
        channel_mult=list(e["channel_mult"]), num_res_blocks=e["num_res_blocks"],
        attention_resolutions=list(e["attention_resolutions"]), num_heads=e.get("num_heads", 1),
        num_head_channels=e.get("num_head_channels", -1), dropout=float(e.get("dropout", 0.0)),
    )
    d = config["vae_config"]["params"]["ddconfig"]
    if d.get("attn_resolutions"):
        raise NotImplementedError(f"vae ddconfig: attn_resolutions={d['attn_resolutions']} is not supported (only [])")
    vae = VAEConfig(
        in_channels=d["in_channels"], out_channels=d["out_ch"], latent_channels=d["z_channels"], ch=d["ch"],
        ch_mult=list(d["ch_mult"]), num_res_blocks=d["num_res_blocks"],
        num_fuse_blocks=d.get("num_fuse_block", 2),
    )
    return ModelConfig(unet=unet, cond_encoder=encoder, vae=vae, num_frames=config["num_frames"])


@register("unet.pt")
@torch.no_grad()
def check_unet(path: Path, config: dict) -> list[ParityRow]:
    """Time-aware encoder maps and UNet noise prediction, training-style and sampler-style calls."""
    fixture = load_fixture(path)
    cfg = authors_model_config(config)
    context = fixture["inputs"]["context"]
    denoiser = build_denoiser(cfg).eval()
    load_into(denoiser, official_denoiser_state_dict(fixture["state_dict"], cfg, context[:1]), str(path))
    rows = []
    for style in ("", "_sampler_style"):
        if f"inputs{style}" not in fixture:
            continue
        inputs, outputs = fixture[f"inputs{style}"], fixture[f"outputs{style}"]
        cond = denoiser.cond_encoder(inputs["lr_latent"], inputs["t_struct"])
        # the authors key the maps by width; ours are ordered by level (= decreasing width)
        for level, width in enumerate(sorted(outputs["struct_cond"], key=int, reverse=True)):
            rows.append(compare(f"struct_cond{style}[{width}]", cond[level], outputs["struct_cond"][width]))
        eps = denoiser(inputs["x_t"], inputs["t"], inputs["lr_latent"], cfg.num_frames, inputs["context"], cond)
        rows.append(compare(f"eps{style}", eps, outputs["eps"]))
    return rows


@register("vae.pt")
@torch.no_grad()
def check_vae(path: Path, config: dict) -> list[ParityRow]:
    """Encoder features, posterior, and the temporal CFW decoder output."""
    fixture = load_fixture(path)
    cfg = authors_model_config(config)
    vae = build_vae(cfg).eval()
    load_into(vae, official_vae_state_dict(fixture["state_dict"], cfg), str(path))
    inputs, outputs = fixture["inputs"], fixture["outputs"]
    posterior, feats = vae.encode(inputs["lr_images"])
    decoded = vae.decode(inputs["latents"], feats, cfg.num_frames, float(inputs["dec_w"]))
    rows = [compare(f"enc_fea[{i}]", f, r) for i, (f, r) in enumerate(zip(feats, outputs["enc_fea"]))]
    rows += [
        compare("posterior_mean", posterior.mean, outputs["posterior_mean"]),
        compare("posterior_logvar", posterior.logvar, outputs["posterior_logvar"]),
        compare("moments", posterior.parameters, outputs["moments"]),
        compare("decoded", decoded, outputs["decoded"]),
    ]
    return rows


@register("guidance.pt:p_sample_canvas", needs=("unet.pt",))
@torch.no_grad()
def check_sampling_steps(path: Path, config: dict) -> list[ParityRow]:
    """Complete sampling steps (tiled ε̂, DDPM step, guided update) with the ``unet.pt`` weights."""
    from mgld.diffusion.sampling import MotionGuidance, sampling_step
    from mgld.diffusion.schedule import respaced_schedule

    fixture = load_fixture(path)
    canvas, inputs = fixture["p_sample_canvas"], fixture["inputs"]
    common = canvas["common_inputs"]
    cfg = authors_model_config(config)
    unet_fixture = load_fixture(path.parent / "unet.pt")
    denoiser = build_denoiser(cfg).eval()
    context = common["cond(context)"]
    load_into(denoiser, official_denoiser_state_dict(unet_fixture["state_dict"], cfg, context), str(path))
    steps = int(config.get("ddpm_steps", 50))
    schedule = respaced_schedule(steps)
    z_lr = common["init_latent(struct_cond)"]
    rows = [compare("x_T", schedule.initial_latents(z_lr, noise=common["noise_for_x_T"]), common["x_T"])]
    guidance = MotionGuidance((inputs["flow_f"], inputs["flow_b"]), (inputs["fwd_occs"], inputs["bwd_occs"]),
                              scale=-float(inputs["guidance_scale"]), variant="authors")
    for step in canvas["steps"]:
        k = int(step["i"])
        if schedule.timestep(k) != int(step["t_replace"]):
            raise ValueError(f"step {k}: timestep {schedule.timestep(k)} vs fixture {int(step['t_replace'])}")
        out = sampling_step(denoiser, schedule, step["x"], k, z_lr, cfg.num_frames, step["noise"],
                            guidance=guidance, tile_size=int(common["tile_size"]),
                            tile_overlap=int(common["tile_overlap"]))
        rows += [
            compare(f"step{k}.pred_x0", out.pred_x0, step["pred_x0"]),
            compare(f"step{k}.model_mean", out.mean, step["model_mean"]),
            compare(f"step{k}.before_guidance", out.before_guidance, step["latents_before_guidance"]),
            compare(f"step{k}.guidance_loss", out.guidance_loss, step["guidance_loss"]),
            compare(f"step{k}.latents_out", out.latents, step["latents_out"]),
        ]
    return rows
