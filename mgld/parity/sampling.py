"""Parity checks of the sampling fixtures (``schedule.json``, ``occlusion.pt``, ``guidance.pt``, ``colorfix.pt``).

Shapes, frame counts, step counts and sizes are read from each fixture, so any fixture folder in the same
format (README of ``tests/fixtures/oracle``) is checked the same way. ``guidance.pt['p_sample_canvas']`` (whole
sampling steps, which need the UNet) is checked elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange

from mgld.diffusion.guidance import guidance_step, warping_loss
from mgld.diffusion.schedule import NUM_TRAIN_TIMESTEPS, RespacedSchedule, make_scheduler
from mgld.flow import flow_warp, latent_flows_and_masks, occlusion_mask, resize_flow
from mgld.parity.registry import ParityRow, compare, load_fixture, register
from mgld.pipeline.colorfix import adain_color_fix, wavelet_color_fix

_SCHEDULE_CONSTANTS = {"linear_start": 0.00085, "linear_end": 0.012, "num_train_timesteps": NUM_TRAIN_TIMESTEPS}


@register("schedule.json")
def check_schedule(path: Path, config: dict) -> list[ParityRow]:
    """1000-step buffers, respaced timesteps and tables, x_T coefficients."""
    ref = load_fixture(path)
    for key, value in _SCHEDULE_CONSTANTS.items():
        if key in ref and ref[key] != value:
            raise NotImplementedError(f"{path.name}: {key}={ref[key]} (only {value} is supported)")
    timestep_keys = [key for key in ref if key.startswith("timesteps_")]
    if len(timestep_keys) != 1:
        raise ValueError(f"{path.name}: expected one timesteps_<N> entry, found {timestep_keys}")
    num_steps = int(ref.get("ddpm_steps", timestep_keys[0].removeprefix("timesteps_")))
    scheduler = make_scheduler(num_steps)
    schedule = RespacedSchedule.from_scheduler(scheduler)
    ac = scheduler.alphas_cumprod
    rows = [
        compare(f"timesteps_{num_steps}", schedule.timesteps, ref[f"timesteps_{num_steps}"]),
        compare("betas_1000_float64", scheduler.betas, ref["betas_1000_float64"]),
        compare("betas_1000_buffer_float32", scheduler.betas, ref["betas_1000_buffer_float32"]),
        compare("alphas_cumprod_1000_buffer_float32", ac, ref["alphas_cumprod_1000_buffer_float32"]),
        compare("sqrt_alphas_cumprod_1000", ac.sqrt(), ref["sqrt_alphas_cumprod_1000"]),
        compare("sqrt_one_minus_alphas_cumprod_1000", (1 - ac).sqrt(), ref["sqrt_one_minus_alphas_cumprod_1000"]),
    ]
    for name, values in ref["respaced"].items():
        if isinstance(values, list):
            rows.append(compare(f"respaced.{name}", getattr(schedule, name), values))
    rows.append(compare("x_T_coefficients", schedule.x_T_coefficients, ref["x_T_coefficients"]))
    return rows


@register("occlusion.pt")
def check_occlusion(path: Path, config: dict) -> list[ParityRow]:
    """Forward-backward occlusion masks, both warps, resize_flow."""
    fixture = load_fixture(path)
    inputs, ref = fixture["inputs"], fixture["outputs"]
    fwd, bwd, alpha, beta = inputs["fwd_flow"], inputs["bwd_flow"], inputs["alpha"], inputs["beta"]
    warped = flow_warp(inputs["feature"], inputs["flow_for_warp"])
    return [
        compare("fwd_occ", rearrange(occlusion_mask(fwd, bwd, alpha, beta), "n 1 h w -> n h w"), ref["fwd_occ"]),
        compare("bwd_occ", rearrange(occlusion_mask(bwd, fwd, alpha, beta), "n 1 h w -> n h w"), ref["bwd_occ"]),
        compare("flow_warp_basicsr", warped, ref["flow_warp_basicsr"]),
        compare("flow_warp_util_flow", warped, ref["flow_warp_util_flow"]),
        compare("resized_flow", resize_flow(inputs["flow_to_resize"], tuple(inputs["resize_to"])), ref["resized_flow"]),
    ]


@register("guidance.pt")
def check_guidance(path: Path, config: dict) -> list[ParityRow]:
    """Flow pre-processing to the latent grid, then the authors' warping loss, its gradient and the update."""
    fixture = load_fixture(path)
    inputs, ref = fixture["inputs"], fixture["outputs"]
    latents = inputs["latents"]  # (b t) c h w, b = 1
    num_frames = inputs["flow_f"].shape[1] + 1
    settings = config.get("guidance_fixture", {})
    alpha, beta = settings.get("occ_alpha", 0.01), settings.get("occ_beta", 0.5)

    lr = inputs["flows_lr"]
    flows_forward, flows_backward = (
        rearrange(lr[name], "1 n c h w -> n c h w") for name in ("flows_forward", "flows_backward")
    )
    flow_f, flow_b, fwd_occ, bwd_occ = latent_flows_and_masks(
        flows_forward, flows_backward, tuple(latents.shape[-2:]), alpha, beta
    )
    rows = [
        compare("flow_f", flow_f, inputs["flow_f"]),
        compare("flow_b", flow_b, inputs["flow_b"]),
        compare("fwd_occs", fwd_occ, inputs["fwd_occs"]),
        compare("bwd_occs", bwd_occ, inputs["bwd_occs"]),
    ]

    # the loss and the update from the fixture's own flows and masks, so each row tests one thing
    flows, masks = (inputs["flow_f"], inputs["flow_b"]), (inputs["fwd_occs"], inputs["bwd_occs"])
    z = latents.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(warping_loss(z, flows, masks, num_frames, "authors"), z)
    # the authors' guidance_scale is negative (descent); ours is its magnitude with the same update
    updated, loss = guidance_step(
        latents,
        flows,
        masks,
        -inputs["guidance_scale"],
        inputs["model_log_variance"],
        "authors",
        num_frames=num_frames,
    )
    rows += [
        compare("loss", loss, ref["loss"]),
        compare("grad", grad, ref["grad"]),
        compare("updated_latents", updated, ref["updated_latents"]),
    ]
    return rows


@register("colorfix.pt")
def check_colorfix(path: Path, config: dict) -> list[ParityRow]:
    """AdaIN and wavelet colour fixes."""
    fixture = load_fixture(path)
    inputs, ref = fixture["inputs"], fixture["outputs"]
    x, lq = inputs["x_samples"], inputs["im_lq"]
    return [
        compare("adain", adain_color_fix(x, lq), ref["adain"]),
        compare("wavelet", wavelet_color_fix(x, lq), ref["wavelet"]),
    ]
