"""Flow weights: the stage-1 checkpoint's own RAFT (``flownet_model.*``) converted to ``flow.safetensors`` and used by
default, every accepted RAFT/SpyNet source, the default lookup, and errors that name the file."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from mgld.flow import RaftEstimator, build_flow_estimator
from mgld.weights.checkpoints import FLOW_FILE, CheckpointError
from mgld.weights.hub import default_flow_weights
from mgld.weights.loading import convert_official
from official_factory import official_stage1_state_dict, write_lightning_checkpoint
from raft_layout import random_raft, to_raft_things_layout

ITERS = 2  # RAFT refinement steps in these tests (10 at inference); enough to exercise every module


def _pair(h=24, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ref = torch.nn.functional.interpolate(torch.rand(1, 3, h // 4, w // 4, generator=g), size=(h, w), mode="bicubic")
    return ref.clamp(0, 1), torch.roll(ref, shifts=2, dims=-1).clamp(0, 1)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A Lightning stage-1 checkpoint in the official layout whose flownet_model.* hold a random RAFT."""
    root = tmp_path_factory.mktemp("stage1")
    raft = random_raft(seed=3)
    path = root / "mgldvsr_unet.ckpt"
    write_lightning_checkpoint(path, official_stage1_state_dict(raft=raft), root)
    return path, raft


def test_stage1_raft_is_converted_and_gives_the_same_flows(stage1, tmp_path, oracle_cfg):
    path, raft = stage1
    out = convert_official(tmp_path / "w", stage1=path, cfg=oracle_cfg)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "denoiser.safetensors", FLOW_FILE]
    stored = load_file(out / FLOW_FILE)
    expected = raft.state_dict()
    assert stored.keys() == expected.keys()  # torchvision raft_large names, the shortcut norm once
    assert all(torch.equal(stored[k], expected[k]) for k in expected)  # incl. the BatchNorm running statistics
    assert "flownet_model" in (out / "config.yaml").read_text()  # provenance

    ref, sup = _pair()
    direct = RaftEstimator(raft, num_iters=ITERS)(ref, sup)
    assert direct.shape == (1, 2, 24, 32) and direct.abs().max() > 0
    for source in (out, out / FLOW_FILE, path):  # converted folder, its file, the official .ckpt itself
        estimator = build_flow_estimator("raft", source, raft_iters=ITERS)
        assert torch.equal(estimator(ref, sup), direct), source
    # inference's default lookup picks the converted file, or the .ckpt the denoiser comes from
    assert default_flow_weights("raft", None, out) == str(out / FLOW_FILE)
    assert default_flow_weights("raft", None, path) == str(path)


def test_default_flow_weights_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("MGLD_HOME", str(tmp_path / "home"))
    folder, official = tmp_path / "home" / "mgld-vsr", tmp_path / "home" / "official" / "raft-things.pth"
    folder.mkdir(parents=True)
    assert default_flow_weights("raft", None, folder) is None  # -> torchvision's C_T_V1 in torch hub's cache
    official.parent.mkdir()
    official.write_bytes(b"x")
    assert default_flow_weights("raft", None, folder) == str(official)
    no_raft = tmp_path / "own_stage1.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}}, no_raft)
    assert default_flow_weights("raft", None, no_raft) == str(official)  # a .ckpt without flownet_model.*
    (folder / FLOW_FILE).write_bytes(b"x")
    assert default_flow_weights("raft", None, folder) == str(folder / FLOW_FILE)
    assert default_flow_weights("raft", None, None) == str(folder / FLOW_FILE)  # None: the default folder
    assert default_flow_weights("raft", "~/mine.pth", folder).endswith("/mine.pth") and "~" not in \
        default_flow_weights("raft", "~/mine.pth", folder)
    assert default_flow_weights("dis", None, folder) is None
    assert default_flow_weights("spynet", "s.pth", folder) == "s.pth"


def test_flow_weight_errors_name_the_file(stage1, tmp_path, oracle_cfg):
    path, raft = stage1
    partial = official_stage1_state_dict(with_raft=False) | {
        k: v for k, v in to_raft_things_layout(raft.state_dict(), "flownet_model.").items()
        if not k.startswith("flownet_model.update_block.")}
    bad = tmp_path / "partial_raft.ckpt"
    torch.save({"state_dict": partial}, bad)
    for make in (lambda: build_flow_estimator("raft", bad), lambda: convert_official(tmp_path / "w", stage1=bad,
                                                                                      cfg=oracle_cfg)):
        with pytest.raises(CheckpointError, match=r"partial_raft\.ckpt.*missing keys \['mask_predictor\.") as err:
            make()
        assert "Unexpected key(s)" not in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "w").exists()  # nothing written by the failed conversion

    foreign = tmp_path / "foreign.safetensors"
    save_file({"conv1.weight": torch.zeros(8, 3, 3, 3)}, foreign)
    with pytest.raises(CheckpointError, match=r"flow weights .*foreign\.safetensors does not fit RAFT.*unexpected"):
        build_flow_estimator("raft", foreign)
    with pytest.raises(CheckpointError, match=r"flow weights .*foreign\.safetensors does not fit SpyNet"):
        build_flow_estimator("spynet", foreign)

    empty_folder = tmp_path / "old_convert"
    empty_folder.mkdir()
    with pytest.raises(FileNotFoundError, match=r"old_convert is a folder without flow\.safetensors.*mgld convert"):
        build_flow_estimator("raft", empty_folder)

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[: 1 << 16])
    with pytest.raises(CheckpointError, match=r"truncated\.ckpt: truncated or damaged") as err:
        build_flow_estimator("raft", truncated)
    assert "weights_only" not in str(err.value)


def test_stage1_without_raft_converts_without_flow_file(tmp_path, oracle_cfg):
    path = tmp_path / "no_raft.ckpt"
    torch.save({"state_dict": official_stage1_state_dict(with_raft=False)}, path)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / FLOW_FILE).write_bytes(b"stale")  # from an earlier conversion of another checkpoint
    out = convert_official(tmp_path / "w", stage1=path, cfg=oracle_cfg)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "denoiser.safetensors"]


def test_spynet_from_the_video_vae_checkpoint(tmp_path):
    from mgld._compat import import_basicsr

    params = import_basicsr("basicsr.archs.spynet_arch").SpyNet().state_dict()
    ckpt = {"state_dict": {"encoder.conv_in.weight": torch.zeros(1)}
            | {"loss.flownet." + k: v for k, v in params.items()} | {"loss.logvar": torch.zeros(())}}
    torch.save(ckpt, tmp_path / "video_vae_cfw.ckpt")
    estimator = build_flow_estimator("spynet", tmp_path / "video_vae_cfw.ckpt")
    loaded = estimator.model.state_dict()
    assert all(torch.equal(loaded[k], params[k]) for k in params)
