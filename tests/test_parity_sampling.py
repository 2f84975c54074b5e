"""Parity of the schedule, occlusion, guidance and colour-fix code with the authors' (oracle fixtures)."""

from pathlib import Path

import pytest

from mgld.parity import format_table, run_checks

FIXTURES = Path(__file__).parent / "fixtures" / "oracle"
SAMPLING_FIXTURES = ["schedule.json", "occlusion.pt", "guidance.pt", "colorfix.pt"]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def results():
    return run_checks(FIXTURES, only=SAMPLING_FIXTURES)


def test_every_output_matches_the_authors(results):
    failed = [row for rows in results.values() for row in rows if not row.passed(TOLERANCE)]
    assert not failed, "\n" + format_table(results, TOLERANCE)


def test_every_output_is_checked(results):
    names = {fixture: {row.name for row in rows} for fixture, rows in results.items()}
    assert names["occlusion.pt"] == {"fwd_occ", "bwd_occ", "flow_warp_basicsr", "flow_warp_util_flow", "resized_flow"}
    assert names["guidance.pt"] == {
        "flow_f", "flow_b", "fwd_occs", "bwd_occs", "loss", "grad", "updated_latents"
    }  # fmt: skip
    assert names["colorfix.pt"] == {"adain", "wavelet"}
    respaced = {
        "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
        "posterior_mean_coef1", "posterior_mean_coef2",
    }  # fmt: skip
    assert {f"respaced.{name}" for name in respaced} | {"x_T_coefficients"} <= names["schedule.json"]
    assert any(name.startswith("timesteps_") for name in names["schedule.json"])
