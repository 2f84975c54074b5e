"""Flow warping, resizing, occlusion masks, flow direction conventions and the estimators' plumbing."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.optical_flow import raft_large, raft_small

from mgld._compat import import_basicsr
from mgld.flow import (
    RaftEstimator,
    build_flow_estimator,
    compute_flows,
    convert_raft_things_state_dict,
    flow_warp,
    flows_and_masks,
    occlusion_mask,
    resize_flow,
)
from raft_layout import to_raft_things_layout


def _constant_flow(n, h, w, dx, dy):
    flow = torch.empty(n, 2, h, w)
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


def _textured(h, w, seed=0):
    """Smooth random RGB image in [0, 1] (bicubic-upsampled noise), good texture for flow estimation."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(1, 3, h // 4, w // 4, generator=g), size=(h, w), mode="bicubic").clamp(0, 1)


# --- flow_warp / resize_flow -------------------------------------------------------------------------------


def test_zero_flow_warps_to_identity():
    x = torch.randn(2, 5, 12, 20)
    torch.testing.assert_close(flow_warp(x, torch.zeros(2, 2, 12, 20)), x, rtol=0, atol=1e-5)  # grid rounding


def test_translation_warped_back_matches_except_borders():
    x = torch.randn(1, 3, 16, 24)
    sup = torch.roll(x, shifts=(2, 3), dims=(-2, -1))  # sup(y, x) = ref(y - 2, x - 3)
    out = flow_warp(sup, _constant_flow(1, 16, 24, 3.0, 2.0))  # samples sup at p + (3, 2)
    torch.testing.assert_close(out[..., :-2, :-3], x[..., :-2, :-3])
    assert out[..., -2:, :].abs().max() == 0 and out[..., :, -3:].abs().max() == 0  # zeros padding


@pytest.mark.filterwarnings("ignore:torch.meshgrid")  # basicsr's own call
def test_flow_warp_and_resize_flow_match_basicsr():
    arch_util = import_basicsr("basicsr.archs.arch_util")
    x, flow = torch.randn(2, 4, 10, 14), 3 * torch.randn(2, 2, 10, 14)
    torch.testing.assert_close(flow_warp(x, flow), arch_util.flow_warp(x, flow.permute(0, 2, 3, 1)))
    torch.testing.assert_close(
        resize_flow(flow, (7, 21)), arch_util.resize_flow(flow, "shape", (7, 21)), rtol=0, atol=0
    )


def test_resize_flow_rescales_vectors_per_axis():
    out = resize_flow(_constant_flow(1, 32, 48, 3.0, -2.0), (16, 12))
    assert out.shape == (1, 2, 16, 12)
    torch.testing.assert_close(out[:, 0], torch.full((1, 16, 12), 0.75))  # x: 3 * 12/48
    torch.testing.assert_close(out[:, 1], torch.full((1, 16, 12), -1.0))  # y: -2 * 16/32


# --- occlusion ---------------------------------------------------------------------------------------------


def test_consistent_flows_occlude_only_what_leaves_the_frame():
    fwd, bwd = _constant_flow(1, 8, 12, 2.0, 0.0), _constant_flow(1, 8, 12, -2.0, 0.0)
    mask = occlusion_mask(fwd, bwd)
    expected = torch.zeros(1, 1, 8, 12)
    expected[..., -2:] = 1  # p + 2 falls outside: nothing to compare with
    assert torch.equal(mask, expected)
    assert torch.equal(occlusion_mask(torch.zeros(1, 2, 8, 12), torch.zeros(1, 2, 8, 12)), torch.zeros(1, 1, 8, 12))


def test_inconsistent_flows_are_marked():
    fwd, bwd = _constant_flow(1, 10, 10, 1.0, 0.0), _constant_flow(1, 10, 10, -1.0, 0.0)
    bwd[:, 0, 3:6, 4:7] = 3.0  # the other frame disagrees inside this square
    mask = occlusion_mask(fwd, bwd)[0, 0]
    expected = torch.zeros(10, 10)
    expected[3:6, 3:6] = 1  # pixels of the reference frame that land in the square (x + 1 in 4..6)
    expected[:, -1] = 1  # x + 1 leaves the frame
    assert torch.equal(mask, expected)


# --- direction conventions ---------------------------------------------------------------------------------


class _IndexEstimator:
    """Fake estimator: frame i is filled with i; returns (index of ref, index of sup) as a 2-channel flow."""

    def __init__(self):
        self.calls = 0

    def __call__(self, ref, sup):
        self.calls += 1
        return torch.cat([ref[:, :1], sup[:, :1]], dim=1)


def test_compute_flows_order_and_one_call_per_direction():
    frames = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 6, 8)
    estimator = _IndexEstimator()
    flows_forward, flows_backward = compute_flows(frames, estimator)
    assert estimator.calls == 2
    assert flows_forward.shape == flows_backward.shape == (3, 2, 6, 8)
    assert flows_forward[:, :, 0, 0].tolist() == [[1, 0], [2, 1], [3, 2]]  # W_i = flownet(f_{i+1}, f_i)
    assert flows_backward[:, :, 0, 0].tolist() == [[0, 1], [1, 2], [2, 3]]  # B_i = flownet(f_i, f_{i+1})


def test_flows_and_masks_resizes_and_masks_on_the_right_grids():
    def translation(ref, sup):  # every frame moves 4 px right: B = +4, W = -4 at 32 x 32
        direction = torch.sign(sup[:, :1, :1, :1] - ref[:, :1, :1, :1])
        return direction.expand(-1, 2, 32, 32) * torch.tensor([4.0, 0.0]).view(1, 2, 1, 1)

    frames = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 3, 32, 32)
    flow_f, flow_b, fwd_occ, bwd_occ = flows_and_masks(frames, translation, (16, 16))
    assert flow_f.shape == flow_b.shape == (1, 2, 2, 16, 16)
    assert fwd_occ.shape == bwd_occ.shape == (1, 2, 1, 16, 16)
    assert flow_f[0, :, 0].unique().tolist() == [-2.0] and flow_b[0, :, 0].unique().tolist() == [2.0]
    # fwd_occ = occ(B, W) on grid i: B points right, so the right 2 columns leave the frame; bwd_occ mirrors it
    assert fwd_occ[..., -2:].min() == 1 and fwd_occ[..., :-2].max() == 0
    assert bwd_occ[..., :2].min() == 1 and bwd_occ[..., 2:].max() == 0


def test_dis_follows_the_convention():
    ref = _textured(64, 64)
    sup = torch.roll(ref, shifts=3, dims=-1)  # sup(p) = ref(p - 3): warp(sup, +3) = ref
    flow = build_flow_estimator("dis")(ref, sup)
    assert flow.shape == (1, 2, 64, 64)
    assert abs(flow[0, 0, 8:56, 8:56].mean().item() - 3.0) < 0.1
    assert abs(flow[0, 1, 8:56, 8:56].mean().item()) < 0.1


# --- RAFT / SpyNet plumbing --------------------------------------------------------------------------------

def test_raft_things_key_mapping_round_trips():
    state = raft_large(weights=None).state_dict()
    original = to_raft_things_layout(state)
    # the authors' RAFT_SR (`flownet_model.*`) holds exactly this many numbers (fixture README inventory)
    assert sum(v.numel() for v in original.values()) == 5_261_329
    assert original["module.update_block.mask.2.weight"].shape == (576, 256, 1, 1)
    assert original["module.update_block.gru.convq2.weight"].shape == (128, 384, 5, 1)
    converted = convert_raft_things_state_dict(original)
    assert converted.keys() == state.keys()
    assert all(converted[k] is state[k] for k in state)
    raft_large(weights=None).load_state_dict(converted, strict=True)
    # the same keys as the authors' stage-1 checkpoint stores them (RAFT_SR, `flownet_model.` prefix)
    stage1 = {"flownet_model." + k.removeprefix("module."): v for k, v in original.items()}
    assert convert_raft_things_state_dict(stage1).keys() == state.keys()


def test_build_raft_from_original_and_torchvision_files(tmp_path):
    state = raft_large(weights=None).state_dict()
    torch.save(to_raft_things_layout(state), tmp_path / "raft-things.pth")
    torch.save(state, tmp_path / "raft_large.pth")
    for name in ("raft-things.pth", "raft_large.pth"):
        estimator = build_flow_estimator("raft", tmp_path / name)
        assert estimator.num_iters == 10 and estimator.input_range == "unit"
        loaded = estimator.model.state_dict()
        assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_raft_estimator_pads_and_crops():
    estimator = RaftEstimator(raft_small(weights=None), num_iters=1)
    ref, sup = torch.rand(1, 3, 36, 44), torch.rand(1, 3, 36, 44)
    flow = estimator(ref, sup)
    assert flow.shape == (1, 2, 36, 44) and torch.isfinite(flow).all()
    symmetric = RaftEstimator(estimator.model, input_range="symmetric", num_iters=1)(ref, sup)
    assert not torch.allclose(flow, symmetric)  # the input range reaches the network


def test_missing_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="raft_large_C_T_V1-22a6c225.pth.*raft-things"):
        build_flow_estimator("raft")
    with pytest.raises(FileNotFoundError, match="spynet_sintel_final-3d2a1287.pth"):
        build_flow_estimator("spynet")
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        build_flow_estimator("raft", tmp_path / "nowhere.pth")


def test_spynet_loads_released_layout(tmp_path):
    spynet_arch = import_basicsr("basicsr.archs.spynet_arch")
    params = {k: v for k, v in spynet_arch.SpyNet().state_dict().items() if k not in ("mean", "std")}
    torch.save({"params": params}, tmp_path / "spynet.pth")
    estimator = build_flow_estimator("spynet", tmp_path / "spynet.pth")
    assert torch.equal(
        estimator.model.basic_module[0].basic_module[0].weight, params["basic_module.0.basic_module.0.weight"]
    )
    assert estimator(torch.rand(1, 3, 40, 48), torch.rand(1, 3, 40, 48)).shape == (1, 2, 40, 48)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown flow method"):
        build_flow_estimator("pwc")
    with pytest.raises(ValueError, match="no weights"):
        build_flow_estimator("dis", "x.pth")
    with pytest.raises(ValueError, match="x grid"):
        flow_warp(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 5))
