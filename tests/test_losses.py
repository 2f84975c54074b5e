"""Stage-2 loss terms on small hand-made inputs (docs/training.md §5), and the PatchGAN discriminator."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from mgld.flow import flow_warp, occlusion_mask
from mgld.models.discriminator import PatchDiscriminator
from mgld.training.losses import (
    LPIPSLoss,
    frame_difference_loss,
    generator_adversarial_loss,
    hinge_discriminator_loss,
    l1_loss,
    sobel_edges,
    structure_consistency_loss,
    structure_weight,
)

T = 5


def translating_clip(velocity=(1, 0), size=24, seed=0) -> torch.Tensor:
    """``T 3 size size`` in [-1, 1]: frame i is a random texture shifted by i·velocity (integer pixels)."""
    g = torch.Generator().manual_seed(seed)
    big = torch.rand(3, size + 2 * T, size + 2 * T, generator=g) * 2 - 1
    vx, vy = velocity
    frames = [big[:, T + vy * i : T + vy * i + size, T + vx * i : T + vx * i + size] for i in range(T)]
    return torch.stack(frames)


class GlobalShiftEstimator:
    """A weight-free exact flow estimator for globally translating frames: the integer shift in [-3, 3]² that best
    maps ``sup`` onto ``ref`` (ref(p) ≈ sup(p + d)), as a constant field. Follows mgld.flow's convention."""

    def __call__(self, ref: torch.Tensor, sup: torch.Tensor) -> torch.Tensor:
        flows = []
        h, w = ref.shape[-2:]
        for r, s in zip(ref, sup):
            best = min(
                ((dx, dy) for dx in range(-3, 4) for dy in range(-3, 4)),
                key=lambda d: (r[:, 4:-4, 4:-4] - s[:, 4 + d[1] : h - 4 + d[1], 4 + d[0] : w - 4 + d[0]]).abs().mean(),
            )
            flows.append(torch.tensor(best, dtype=ref.dtype).view(2, 1, 1).expand(2, *ref.shape[-2:]))
        return torch.stack(flows)


def test_l1_and_hinge_gan_values():
    a = torch.zeros(2, 3, 4, 4)
    assert l1_loss(a, a + 0.25).item() == pytest.approx(0.25)
    real, fake = torch.full((2, 1, 3, 3), 2.0), torch.full((2, 1, 3, 3), -2.0)
    assert hinge_discriminator_loss(real, fake).item() == 0.0  # both beyond the margins
    assert hinge_discriminator_loss(torch.zeros(1), torch.zeros(1)).item() == pytest.approx(1.0)
    assert hinge_discriminator_loss(torch.full((1,), 0.5), torch.full((1,), 0.5)).item() == pytest.approx(1.0)
    assert generator_adversarial_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)


def test_frame_difference_loss():
    gt = torch.rand(2 * T, 3, 8, 8)
    assert frame_difference_loss(gt, gt, T).item() == 0.0
    # a constant offset per clip keeps every frame-to-frame change: still zero
    offset = torch.tensor([0.3, -0.2]).repeat_interleave(T).view(-1, 1, 1, 1)
    assert frame_difference_loss(gt + offset, gt, T).item() == pytest.approx(0.0, abs=1e-6)
    # flicker: +0.1 on frame 2 of each clip changes pairs (1,2) and (2,3) by 0.1 -> mean = 2 * 0.1 / 4
    flicker = torch.zeros(2, T, 1, 1, 1)
    flicker[:, 2] = 0.1
    out = gt + rearrange(flicker, "b t c h w -> (b t) c h w")
    assert frame_difference_loss(out, gt, T).item() == pytest.approx(0.05, rel=1e-5)


def test_sobel_weight_map_on_a_step_edge():
    x = torch.zeros(1, 1, 6, 8)
    x[..., 4:] = 1.0  # vertical step between columns 3 and 4
    grad = torch.zeros(6, 8)
    grad[:, 3:5] = 0.5  # normalised Sobel: (1 + 2 + 1) / 8 on both sides of the edge
    expected = 1 + 3 * torch.sqrt(grad**2 + 1e-6)
    torch.testing.assert_close(structure_weight(x, 3.0)[0, 0], expected)
    torch.testing.assert_close(sobel_edges(x.transpose(-1, -2))[0, 0], torch.sqrt(grad**2 + 1e-6).t())  # horizontal
    assert not structure_weight(x.requires_grad_(True)).requires_grad


def test_consistency_loss_intended_is_zero_for_consistent_motion_and_grows_with_flicker():
    est = GlobalShiftEstimator()
    gt = translating_clip((1, 1))
    assert structure_consistency_loss(gt, gt, T, est).item() < 1e-5  # out-of-view borders are masked as occluded
    flicker = gt.clone()
    flicker[2] += 0.2
    pred = flicker.requires_grad_(True)
    loss = structure_consistency_loss(pred, gt, T, est)
    plain = structure_consistency_loss(flicker, gt, T, est, sobel_weight=0.0)
    assert loss.item() > plain.item() > 0.1  # the Sobel weight (>= 1) raises the penalty
    loss.backward()
    assert pred.grad.abs().sum() > 0  # the gradient reaches the outputs


def test_consistency_loss_reference_form_has_the_authors_zero_terms():
    """Reference (swapped) form on constant motion, output = GT: every warped term vanishes except the two
    zero targets (docs/algorithm.md §6: frame T-2 in the first sum, frame 1 in the second)."""
    est = GlobalShiftEstimator()
    gt = translating_clip((1, 0))
    loss = structure_consistency_loss(gt, gt, T, est, variant="authors")
    flows_b = est(gt[:-1], gt[1:])  # B_i
    flows_f = est(gt[1:], gt[:-1])  # W_i
    occ_a, occ_b = occlusion_mask(flows_b, flows_f), occlusion_mask(flows_f, flows_b)
    weight = structure_weight(gt)
    expected = (weight[T - 2] * (1 - occ_a[T - 2]) * gt[T - 2]).abs().mean() + (
        weight[1] * (1 - occ_b[0]) * gt[1]
    ).abs().mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    # its only gradient path is the flow of x̂: a non-differentiable estimator leaves none
    pred = gt.clone().requires_grad_(True)
    assert not structure_consistency_loss(pred, gt, T, est, variant="authors").requires_grad
    # sanity of the test estimator: warping frame i+1 with B_i reproduces frame i inside the view
    torch.testing.assert_close(flow_warp(gt[1:], flows_b)[..., 4:-4, 4:-4], gt[:-1][..., 4:-4, 4:-4])


def test_lpips_missing_backbone_weights_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.pth.*losses\.lpips=0"):
        LPIPSLoss("vgg", backbone_weights=tmp_path / "nothing.pth")


def test_lpips_loads_torchvision_backbone_from_a_local_file(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    features = torchvision.models.alexnet(weights=None).features
    path = tmp_path / "alexnet.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in features.state_dict().items()}, path)
    lpips = LPIPSLoss("alex", backbone_weights=path)
    assert torch.equal(lpips.model.net.slice1[0].weight, features[0].weight)
    assert not any(p.requires_grad for p in lpips.parameters())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert lpips(x, x).abs().max().item() < 1e-6
    assert (lpips(x, x.flip(-1)) > 0).all()


def test_patch_discriminator_layout_and_init():
    disc = PatchDiscriminator(3, 64, 3)
    assert sum(p.numel() for p in disc.parameters()) == 2_765_633  # the authors' NLayerDiscriminator (2.77 M)
    assert disc(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 6, 6)
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.bias is None for c in convs] == [False, True, True, True, False]
    assert abs(convs[2].weight.std().item() - 0.02) < 0.002
    tiny = PatchDiscriminator(3, 8, 2)
    assert tiny(torch.zeros(5, 3, 32, 32)).shape == (5, 1, 6, 6)


def test_consistency_reference_form_gradient_goes_through_the_flow_only():
    from mgld.training.losses import build_loss_flow_estimator

    gt = translating_clip((1, 0))
    pred = (gt + 0.05 * torch.randn_like(gt)).requires_grad_(True)

    def differentiable_flow(ref, sup):  # small flows that depend smoothly on the frames
        return 0.5 * (ref - sup).mean(1, keepdim=True).repeat(1, 2, 1, 1)

    loss = structure_consistency_loss(pred, gt, T, differentiable_flow, variant="authors")
    loss.backward()
    assert loss.item() > 0 and pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="only available for SpyNet"):
        build_loss_flow_estimator("dis", differentiable=True)
