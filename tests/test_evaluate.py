"""Evaluation over folders: test-set determinism, matching and refusals, reports, temporal profiles, CLIs."""

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from mgld.eval import evaluation as E

ROOT = Path(__file__).resolve().parents[1]
DX = 3  # horizontal pan, pixels per frame


def _script(name):
    return importlib.import_module(f"mgld.cli.{name}")


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """HR: 2 sequences x 4 frames of 64x96 panned photographs; LR (degraded, seed 0); bicubic x4."""
    root = tmp_path_factory.mktemp("set")
    for name, photo, start in (("000", data.astronaut(), (180, 150)), ("011", data.coffee(), (100, 200))):
        frames = E.panning_sequence(photo, 4, (64, 96), (0, DX), start)
        E.write_sequence(root / "hr" / name, [f"{i:08d}" for i in range(4)], frames)
    E.make_testset(root / "hr", root / "lr", seed=0, progress=False)
    E.upscale_bicubic(root / "lr", root / "bicubic")
    return root


def test_testset_is_byte_deterministic_per_seed(dataset, tmp_path):
    E.make_testset(dataset / "hr", tmp_path / "again", seed=0, progress=False)
    E.make_testset(dataset / "hr", tmp_path / "other", seed=1, progress=False)
    first, again, other = (_tree_digest(p) for p in (dataset / "lr", tmp_path / "again", tmp_path / "other"))
    assert len(first) == 2 * 4 + 1 and first == again
    assert set(other) == set(first) and all(other[k] != first[k] for k in first if k.endswith(".png"))


def test_manifest_records_parameters_per_sequence(dataset):
    manifest = json.loads((dataset / "lr" / "manifest.json").read_text())
    assert manifest["seed"] == 0 and set(manifest["sequences"]) == {"000", "011"}
    seq = manifest["sequences"]["000"]
    assert seq["hr_size_hw"] == [64, 96] and seq["lr_size_hw"] == [16, 24]
    assert seq["params"]["stage1"]["codec"]["encoder"] in {"libx264", "mpeg4"}
    assert manifest["config"]["stage2"]["blur"]["prob"] == 0.8
    assert E.read_frame(dataset / "lr" / "000" / "00000003.png").shape == (16, 24, 3)
    assert E.read_frame(dataset / "bicubic" / "011" / "00000000.png").shape == (64, 96, 3)


def test_markdown_table_one_row_per_method_one_column_per_metric(dataset):
    settings = E.EvalSettings(metrics=("psnr", "ssim", "flicker", "ewarp"), flow="dis")
    report = E.evaluate({"bicubic": dataset / "bicubic", "oracle": dataset / "hr"}, dataset / "hr", settings,
                        progress=False)
    rows = [line for line in E.markdown_table(report).splitlines() if line.startswith("|")]
    header, body = rows[0], rows[2:]
    assert [c.strip() for c in header.strip("|").split("|")] == ["Method", "PSNR↑", "SSIM↑", "Flicker↓",
                                                                  "E*warp(×10⁻³)↓"]
    assert [r.split("|")[1].strip() for r in body] == ["bicubic", "oracle"]
    assert all(len(r.strip("|").split("|")) == 5 for r in body)
    assert report.mean["oracle"]["ssim"] == 1.0 and report.mean["oracle"]["flicker"] == 0.0
    assert 15 < report.mean["bicubic"]["psnr"] < 35 and report.mean["bicubic"]["flicker"] > 1
    assert report.mean["bicubic"]["ewarp"] > report.mean["oracle"]["ewarp"]


def test_report_files_and_dataset_mean(dataset, tmp_path):
    settings = E.EvalSettings(metrics=("psnr", "flicker"))
    report = E.evaluate({"bicubic": dataset / "bicubic"}, dataset / "hr", settings, progress=False)
    files = E.write_report(report, tmp_path)
    per_frame = files["per_frame"].read_text().splitlines()
    assert per_frame[0] == "method,sequence,index,frame,psnr,flicker" and len(per_frame) == 1 + 2 * 4
    seq_means = [v["psnr"] for v in report.per_sequence["bicubic"].values()]
    assert report.mean["bicubic"]["psnr"] == pytest.approx(np.mean(seq_means))
    saved = json.loads(files["json"].read_text())
    assert saved["mean"]["bicubic"]["psnr"] == pytest.approx(report.mean["bicubic"]["psnr"])


def test_mismatched_frames_are_refused_naming_the_sequence(dataset, tmp_path):
    pred = tmp_path / "pred"
    for name in ("000", "011"):
        frames = E.load_sequence(E.list_sequences(dataset / "hr")[name], name)
        E.write_sequence(pred / name, [f"{i:08d}" for i in range(4)], frames)
    (pred / "011" / "00000003.png").unlink()
    with pytest.raises(ValueError, match=r"sequence '011': 3 predicted frames for 4 GT frames.*00000003"):
        E.evaluate({"m": pred}, dataset / "hr", E.EvalSettings(metrics=("psnr",)), progress=False)
    small = E.read_frame(dataset / "lr" / "011" / "00000003.png")
    E.write_frame(pred / "011" / "00000003.png", small)
    with pytest.raises(ValueError, match=r"sequence '011'.*00000003"):
        E.evaluate({"m": pred}, dataset / "hr", E.EvalSettings(metrics=("psnr",)), progress=False)
    lr = E.load_sequence(E.list_sequences(dataset / "lr")["011"], "011")
    E.write_sequence(pred / "011", [f"{i:08d}" for i in range(4)], lr)  # every frame 16x24, GT 64x96
    with pytest.raises(ValueError, match=r"method 'm', sequence '011': frames are \(16, 24\), GT \(64, 96\)"):
        E.evaluate({"m": pred}, dataset / "hr", E.EvalSettings(metrics=("psnr",)), progress=False)


def test_nested_layout_is_found(tmp_path):
    frame = np.zeros((8, 8, 3), np.uint8)
    E.write_sequence(tmp_path / "calendar" / "truth", ["1", "10", "2"], [frame] * 3)
    seqs = E.list_sequences(tmp_path)
    assert [p.name for p in seqs["calendar"]] == ["1.png", "2.png", "10.png"]  # natural order


def test_temporal_profile_of_a_translation_is_sheared():
    texture = np.random.default_rng(0).integers(0, 256, (32, 200, 3), dtype=np.uint8)
    frames = E.panning_sequence(texture, 8, (32, 120), (0, DX))
    profile = E.temporal_profile(frames, row=5)
    assert profile.shape == (8, 120, 3)
    for t in range(7):  # each line is the previous one moved left by DX: slope = -DX px per frame
        errors = [np.abs(profile[t + 1, : 120 - abs(s)].astype(int)
                         - profile[t, s:][: 120 - abs(s)].astype(int)).mean() if s >= 0 else np.inf
                  for s in range(0, 8)]
        assert int(np.argmin(errors)) == DX and errors[DX] == 0
    assert E.temporal_profile(frames, col=7).shape == (8, 32, 3)
    with pytest.raises(ValueError, match="outside"):
        E.temporal_profile(frames, row=32)


def test_evaluate_cli_writes_report_and_profiles(dataset, tmp_path, capsys):
    out = tmp_path / "report"
    code = _script("evaluate").main(["--pred", f"bicubic={dataset / 'bicubic'}", "--gt", str(dataset / "hr"),
                                     "--metrics", "psnr,ssim,lpips,flicker", "--out", str(out),
                                     "--profile-row", "10", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0 and "| bicubic |" in printed
    assert (out / "table.md").read_text() in printed
    assert {p.name for p in (out / "profiles").iterdir()} == {"000_row10.png", "011_row10.png"}
    assert (out / "plots" / "000.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if "lpips" in json.loads((out / "report.json").read_text())["skipped"]:  # no weights cached
        assert "LPIPS skipped: weights" in printed and "| n/a |" in printed


def test_cli_help_lists_every_flag():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--help"],
                            capture_output=True, text=True, check=True)
    for flag in ("--pred", "--gt", "--metrics", "--out", "--crop-border", "--y-channel", "--device",
                 "--batch-size", "--flow", "--raft-weights", "--warp-flow-from", "--profile-row", "--profile-col"):
        assert flag in result.stdout
