"""Shapes, invariants and full-size parameter counts of the networks."""

import pytest
import torch

from conftest import millions
from mgld.config import ModelConfig
from mgld.models import build_denoiser, build_vae
from mgld.models.temporal import TemporalConv, TemporalSelfAttention
from mgld.models.unet import expand_context


def test_full_size_parameter_counts_match_the_spec():
    with torch.device("meta"):
        denoiser, vae = build_denoiser(ModelConfig()), build_vae(ModelConfig())
    groups = {g: [p for _, p in ps] for g, ps in denoiser.parameter_groups().items()}
    assert sum(p.numel() for p in denoiser.unet.parameters()) == 935_321_287
    assert millions(groups["sft"]) == 53.02
    assert millions(groups["temporal"]) == 16.39
    assert millions(groups["cond_encoder"]) == 52.49
    assert sum(p.numel() for p in groups["base"]) == 865_910_724  # exactly SD 2.1's UNet
    decoder = [p for n, p in vae.named_parameters() if n.startswith(("base.decoder.", "temporal.", "fusion."))]
    assert sum(p.numel() for p in decoder) == 80_810_128
    assert millions(vae.fusion.parameters()) == 25.07
    assert millions(vae.temporal.parameters()) == 6.25
    assert sum(isinstance(m, TemporalConv) for m in vae.modules()) == 13
    assert sum(isinstance(m, TemporalConv) for m in denoiser.modules()) == 2


def test_stage1_trainable_groups(tiny_model_cfg):
    denoiser = build_denoiser(tiny_model_cfg)
    trainable = denoiser.set_stage1_trainable()
    names = {n for n, p in denoiser.named_parameters() if p.requires_grad}
    assert len(trainable) == len(names)
    assert all(n.startswith(("unet.sft.", "unet.temporal.", "cond_encoder.")) for n in names)
    assert not any(p.requires_grad for p in denoiser.unet.base.parameters())
    assert "unet.temporal.attention.norm.weight" in names
    denoiser.set_stage1_trainable(train_temporal_norm=False)
    assert not denoiser.unet.temporal.attention.norm.weight.requires_grad
    assert denoiser.unet.temporal.attention.temporal_alpha.requires_grad


def test_alpha_zero_temporal_layers_are_identity():
    x = torch.randn(6, 8, 4, 5)
    for layer in (TemporalConv(8), TemporalSelfAttention(8, head_channels=4)):
        assert layer.temporal_alpha.item() == 0.0
        torch.testing.assert_close(layer(x, num_frames=3), x)


@pytest.mark.parametrize("layer", [TemporalConv(8, alpha_init=0.7), TemporalSelfAttention(8, 4, alpha_init=0.7)])
def test_temporal_layers_do_not_mix_clips(layer):
    x = torch.randn(2 * 3, 8, 4, 5)  # two clips of three frames, clip-major
    y = layer(x, num_frames=3)
    x2 = x.clone()
    x2[3:] += torch.randn_like(x2[3:])  # change only the second clip
    y2 = layer(x2, num_frames=3)
    torch.testing.assert_close(y2[:3], y[:3])
    assert not torch.allclose(y2[3:], y[3:])


def test_temporal_conv_mixes_neighbouring_frames_only():
    layer = TemporalConv(2, alpha_init=1.0)
    x = torch.zeros(5, 2, 1, 1)
    x[2] = 1.0  # an impulse in the middle frame
    with torch.no_grad():
        layer.temporal_conv.bias.zero_()
        y = layer(x, num_frames=5)
    changed = (y.abs().sum(dim=(1, 2, 3)) > 0).tolist()
    assert changed == [False, True, True, True, False]


def test_temporal_attention_is_frame_permutation_equivariant():
    layer = TemporalSelfAttention(8, 4, alpha_init=0.5)
    x = torch.randn(4, 8, 3, 3)
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(layer(x[perm], 4), layer(x, 4)[perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_frames", [1, 3, 5])
def test_denoiser_any_clip_length_and_odd_sizes(tiny_model_cfg, num_frames):
    denoiser = build_denoiser(tiny_model_cfg).eval()
    x = torch.randn(2 * num_frames, 4, 12, 20)  # two clips; 12x20 latent
    with torch.no_grad():
        eps = denoiser(x, torch.tensor([999]), torch.randn_like(x), num_frames)
    assert eps.shape == x.shape and torch.isfinite(eps).all()


def test_context_is_broadcast_per_clip(tiny_model_cfg):
    denoiser = build_denoiser(tiny_model_cfg).eval()
    x, z = torch.randn(6, 4, 8, 8), torch.randn(6, 4, 8, 8)
    ctx = torch.randn(2, 77, 64)  # one context row per clip
    t = torch.tensor([10, 200, 300, 400, 500, 600])
    with torch.no_grad():
        cond = denoiser.cond_encoder(z, t)
        per_clip = denoiser.unet(x, t, ctx, cond, 3)
        pre_repeated = denoiser.unet(x, t, ctx.repeat_interleave(3, dim=0), cond, 3)
        denoiser.text_context.copy_(ctx[:1])
        stored = denoiser(x[:3], t[:3], z[:3], 3)
        explicit = denoiser(x[:3], t[:3], z[:3], 3, context=ctx[:1])
    torch.testing.assert_close(per_clip, pre_repeated)
    torch.testing.assert_close(stored, explicit)
    assert expand_context(ctx, 6).shape == (6, 77, 64)
    with pytest.raises(ValueError, match="does not divide"):
        expand_context(ctx, 5)


def test_cond_encoder_returns_one_map_per_level(tiny_model_cfg):
    denoiser = build_denoiser(tiny_model_cfg)
    feats = denoiser.cond_encoder(torch.randn(3, 4, 16, 24), torch.tensor([5]))
    assert [tuple(f.shape) for f in feats] == [(3, 32, 16, 24), (3, 32, 8, 12)]


def test_unet_refuses_partial_clips(tiny_model_cfg):
    denoiser = build_denoiser(tiny_model_cfg)
    x = torch.randn(4, 4, 8, 8)
    with pytest.raises(ValueError, match="whole number of 3-frame clips"):
        denoiser(x, torch.tensor([1]), x, 3)


def test_vae_shapes_fusion_weight_and_identity_temporal(tiny_model_cfg):
    vae = build_vae(tiny_model_cfg).eval()
    images = torch.rand(3, 3, 64, 48) * 2 - 1
    with torch.no_grad():
        posterior, feats = vae.encode(images)
        z = posterior.mode()
        assert z.shape == (3, 4, 8, 6)
        assert [tuple(f.shape) for f in feats] == [(3, 32, 32, 24), (3, 32, 16, 12)]
        fused = vae.decode(z, feats, num_frames=3, cfw_weight=1.0)
        plain = vae.decode(z, feats, num_frames=3, cfw_weight=0.0)
        sd_decoder = vae.base.decode(z).sample  # alpha = 0: temporal layers are identities
    assert fused.shape == (3, 3, 64, 48)
    torch.testing.assert_close(plain, sd_decoder, atol=1e-5, rtol=1e-5)
    assert (fused - plain).abs().mean() > 1e-3
