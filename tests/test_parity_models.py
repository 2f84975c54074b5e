"""scripts/check_parity.py on the oracle fixtures: the model outputs match the authors' code."""

import shutil
import subprocess
import sys

import torch

from conftest import ORACLE_DIR, ROOT
from mgld.parity import run_checks


def test_model_fixtures_match_within_1e4():
    results = run_checks(ORACLE_DIR, only=["unet.pt", "vae.pt"])
    names = [r.name for rows in results.values() for r in rows]
    assert {"eps", "eps_sampler_style", "decoded", "enc_fea[0]", "enc_fea[1]", "moments"} <= set(names)
    worst = max(r.rel for rows in results.values() for r in rows)
    assert worst < 1e-5, worst


def test_check_parity_script_passes_on_the_fixtures_and_fails_on_a_perturbed_one(tmp_path):
    out = subprocess.run([sys.executable, "scripts/check_parity.py", str(ORACLE_DIR)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    for fixture in ("unet.pt", "vae.pt", "guidance.pt", "occlusion.pt", "colorfix.pt", "schedule.json"):
        assert f"| {fixture} |" in out.stdout
    assert "not checked" not in out.stdout

    perturbed = tmp_path / "oracle"
    perturbed.mkdir()
    for name in ("config.json", "unet.pt"):
        shutil.copy(ORACLE_DIR / name, perturbed / name)
    fixture = torch.load(perturbed / "unet.pt", weights_only=True)
    fixture["outputs"]["eps"] = fixture["outputs"]["eps"] * 1.01
    torch.save(fixture, perturbed / "unet.pt")
    out = subprocess.run([sys.executable, "scripts/check_parity.py", str(perturbed)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 1
    assert "FAILED: eps" in out.stderr and "| unet.pt | eps | 3x4x16x16 |" in out.stdout


def test_check_parity_script_reports_a_missing_folder(tmp_path):
    out = subprocess.run([sys.executable, "scripts/check_parity.py", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    # a missing fixture folder is unreadable input: exit 1, as every command (README "Errors and exit codes")
    assert out.returncode == 1 and "config.json: not found" in out.stderr
