"""Motion-guidance loss (both variants, against docs/algorithm.md §6 written out) and the guided update."""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from mgld.diffusion.guidance import guidance_step, warping_loss
from mgld.flow import flow_warp, occlusion_mask


def _explicit_loss(z, flow_f, flow_b, fwd_occ, bwd_occ, variant):
    """docs/algorithm.md §6 term by term with Python loops (b = 1): z (t, c, h, w); flows (1, t-1, 2, h, w)."""
    t = z.shape[0]
    warp = lambda frame, flow: flow_warp(frame[None], flow[None])[0]  # noqa: E731
    loss = z.new_zeros(())
    for i in range(t - 1):  # frame i+1 aligned to frame i, masked by fwd_occ_i
        m = 1 - fwd_occ[0, i]
        if variant == "fixed":
            target = warp(z[i + 1], flow_b[0, i])
        else:
            target = warp(z[i + 1], flow_b[0, i + 1]) if i <= t - 3 else torch.zeros_like(z[i])
        loss = loss + F.l1_loss(m * target, m * z[i])
    for i in range(1, t):  # frame i-1 aligned to frame i, masked by bwd_occ_{i-1}
        m = 1 - bwd_occ[0, i - 1]
        if variant == "fixed":
            target = warp(z[i - 1], flow_f[0, i - 1])
        else:
            target = warp(z[i - 1], flow_f[0, i - 2]) if i >= 2 else torch.zeros_like(z[i])
        loss = loss + F.l1_loss(m * target, m * z[i])
    return loss


def _random_inputs(t=4, h=10, w=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(t, 4, h, w, generator=g)
    flow_f, flow_b = (2 * torch.randn(1, t - 1, 2, h, w, generator=g) for _ in range(2))
    fwd_occ, bwd_occ = ((torch.rand(1, t - 1, 1, h, w, generator=g) < 0.3).float() for _ in range(2))
    return z, (flow_f, flow_b), (fwd_occ, bwd_occ)


@pytest.mark.parametrize("variant", ["authors", "fixed"])
def test_loss_equals_the_spec_formula(variant):
    z, flows, masks = _random_inputs()
    expected = _explicit_loss(z, *flows, *masks, variant)
    torch.testing.assert_close(warping_loss(z, flows, masks, 4, variant), expected)


def test_variants_differ_under_varying_motion():
    z, flows, masks = _random_inputs()
    assert not torch.allclose(
        warping_loss(z, flows, masks, 4, "authors"), warping_loss(z, flows, masks, 4, "fixed")
    )


def test_static_frames_reference_penalises_magnitude():
    frame = torch.randn(1, 4, 8, 8)
    z = frame.expand(5, 4, 8, 8).contiguous()
    flows = (torch.zeros(1, 4, 2, 8, 8),) * 2
    masks = (torch.zeros(1, 4, 1, 8, 8),) * 2
    # the zero targets of frames t-2 and 1 give 2·mean|z| (docs/algorithm.md §6); the intended loss is 0
    torch.testing.assert_close(warping_loss(z, flows, masks, 5, "authors"), 2 * frame.abs().mean())
    assert warping_loss(z, flows, masks, 5, "fixed").item() < 1e-6  # warp grid rounding only


def test_fully_occluded_frames_give_no_loss_and_no_update():
    z, flows, _ = _random_inputs()
    masks = (torch.ones(1, 3, 1, 10, 12),) * 2
    new, loss = guidance_step(z, flows, masks, scale=10.0, log_variance=-2.0, variant="authors")
    assert loss.item() == 0.0 and torch.equal(new, z)


def _translating_sequence(t=4, h=16, w=16, shift=1.0, seed=0):
    """Latents of a pattern moving `shift` px right per frame, with matching flows and masks."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.randn(1, 4, h // 4, w // 4, generator=g), size=(h, w), mode="bicubic")
    frames = [flow_warp(base, torch.tensor([-shift * i, 0.0]).view(1, 2, 1, 1).expand(1, 2, h, w)) for i in range(t)]
    z = torch.cat(frames)  # z_{i+1}(p) = z_i(p - shift)
    flow_b = torch.tensor([shift, 0.0]).view(1, 1, 2, 1, 1).expand(1, t - 1, 2, h, w)  # warps i+1 onto i
    flow_f = -flow_b
    pairs = (rearrange(flow_b, "1 n c h w -> n c h w"), rearrange(flow_f, "1 n c h w -> n c h w"))
    fwd_occ = rearrange(occlusion_mask(*pairs), "n c h w -> 1 n c h w")
    bwd_occ = rearrange(occlusion_mask(*pairs[::-1]), "n c h w -> 1 n c h w")
    noise = 0.3 * torch.randn(z.shape, generator=g)
    return z, z + noise, (flow_f.contiguous(), flow_b.contiguous()), (fwd_occ, bwd_occ)


def test_corrected_guidance_lowers_the_warping_error():
    clean, noisy, flows, masks = _translating_sequence()
    assert warping_loss(clean, flows, masks, 4, "fixed").item() < 1e-5  # consistent: the loss sees motion
    before = warping_loss(noisy, flows, masks, 4, "fixed")
    with torch.no_grad():
        new, loss = guidance_step(noisy, flows, masks, scale=10.0, log_variance=-4.6, variant="fixed")
    after = warping_loss(new, flows, masks, 4, "fixed")
    torch.testing.assert_close(loss, before)
    assert after < 0.9 * before


def test_update_is_scale_times_abs_log_variance_times_gradient():
    z, flows, masks = _random_inputs()
    zz = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(warping_loss(zz, flows, masks, 4, "authors"), zz)
    with torch.no_grad():
        new, _ = guidance_step(z, flows, masks, scale=10.0, log_variance=torch.tensor([-46.0517]))
    torch.testing.assert_close(new, z - 460.517 * grad)
    # the authors' form, z - guidance_scale·logvar·grad with guidance_scale = -10, is the same update
    torch.testing.assert_close(new, z - (-10.0) * (-46.0517) * grad)


def test_scale_zero_skips_all_flow_work():
    z = torch.randn(3, 4, 8, 8)
    new, loss = guidance_step(z, (None, None), (None, None), scale=0.0, log_variance=-3.0)
    assert new is z and loss is None


def test_dtype_and_no_inplace():
    z, flows, masks = _random_inputs()
    z16 = z.to(torch.bfloat16)
    copy = z16.clone()
    new, loss = guidance_step(z16, flows, masks, scale=10.0, log_variance=-3.0, num_frames=4)
    assert new.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert torch.equal(z16, copy) and not torch.equal(new, z16)


def test_shape_errors_name_the_input():
    z, (flow_f, flow_b), masks = _random_inputs()
    with pytest.raises(ValueError, match="flow_b"):
        warping_loss(z, (flow_f, flow_b[:, :2]), masks, 4)
    with pytest.raises(ValueError, match="variant"):
        warping_loss(z, (flow_f, flow_b), masks, 4, "intended")
    with pytest.raises(ValueError, match="log_variance"):
        guidance_step(z, (flow_f, flow_b), masks, scale=10.0)
