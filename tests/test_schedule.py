"""Respaced DDPM schedule: timesteps, guidance step sizes, the step itself and x_T."""

import math
from pathlib import Path

import pytest
import torch

from mgld.diffusion.schedule import RespacedSchedule, make_scheduler, respaced_schedule, space_timesteps

FIXTURES = Path(__file__).parent / "fixtures" / "oracle"

# docs/algorithm.md §3, space_timesteps(1000, [50])
SPEC_TIMESTEPS_50 = [
    0, 20, 41, 61, 82, 102, 122, 143, 163, 183, 204, 224, 245, 265, 285, 306, 326, 347, 367, 387,
    408, 428, 449, 469, 489, 510, 530, 550, 571, 591, 612, 632, 652, 673, 693, 714, 734, 754, 775, 795,
    816, 836, 856, 877, 897, 917, 938, 958, 979, 999,
]  # fmt: skip


@pytest.fixture(scope="module")
def schedule() -> RespacedSchedule:
    return respaced_schedule(50)


def test_timesteps_are_the_spec_list(schedule):
    assert space_timesteps(1000, 50) == SPEC_TIMESTEPS_50
    assert schedule.timesteps.tolist() == SPEC_TIMESTEPS_50
    assert make_scheduler(50).timesteps.tolist() == SPEC_TIMESTEPS_50[::-1]
    assert [schedule.timestep(k) for k in (49, 0)] == [999, 0]
    assert space_timesteps(1000, 2) == [0, 999] and space_timesteps(1000, 1) == [0]
    with pytest.raises(ValueError):
        space_timesteps(1000, 1001)


def test_guidance_step_sizes_match_the_spec_table(schedule):
    # docs/algorithm.md §6: 10·|log σ̃²_k| per respaced step, and their sum
    table = {49: 15.53, 40: 17.78, 30: 21.52, 20: 26.40, 10: 33.24, 5: 38.86, 2: 46.10, 1: 71.16, 0: 460.52}
    for k, size in table.items():
        assert 10 * abs(schedule.log_variance(k)) == pytest.approx(size, abs=0.006), k
    assert schedule.log_variance(0) == pytest.approx(math.log(1e-20))  # σ̃²_0 = 0, clipped
    assert 10 * schedule.posterior_log_variance_clipped.abs().sum().item() == pytest.approx(1755.2, abs=0.06)


def test_x_T_coefficients(schedule):
    assert schedule.x_T_coefficients == pytest.approx((0.068265, 0.997667), abs=1e-6)
    z, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    x_T = schedule.initial_latents(z, noise=noise)
    torch.testing.assert_close(x_T, make_scheduler(50).add_noise(z, noise, torch.tensor([999])))
    drawn = schedule.initial_latents(z, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        drawn, schedule.initial_latents(z, noise=torch.randn(z.shape, generator=torch.Generator().manual_seed(3)))
    )


@pytest.mark.parametrize("k", [49, 25, 1, 0])
def test_step_equals_diffusers_scheduler_step(schedule, k):
    scheduler = make_scheduler(50)
    eps, x = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    ours = schedule.step(eps, k, x, generator=torch.Generator().manual_seed(7))
    theirs = scheduler.step(eps, schedule.timestep(k), x, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours.prev_sample, theirs.prev_sample, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.pred_x0, theirs.pred_original_sample, rtol=1e-5, atol=1e-5)


def test_step_with_explicit_noise(schedule):
    eps, x, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    out = schedule.step(eps, 30, x, noise=noise)
    torch.testing.assert_close(out.prev_sample, out.mean + math.exp(0.5 * schedule.log_variance(30)) * noise)
    last = schedule.step(eps, 0, x, noise=noise)
    assert torch.equal(last.prev_sample, last.mean)  # no noise at the last step
    torch.testing.assert_close(last.mean, last.pred_x0)  # c1 = 1, c2 = 0 at k = 0
    with pytest.raises(IndexError):
        schedule.step(eps, 50, x)


def test_step_reproduces_the_authors_posterior(schedule):
    """The fixture's recorded p_sample steps: x̂0 and x give μ; μ and the drawn noise give z'."""
    steps = torch.load(FIXTURES / "guidance.pt", weights_only=True)["p_sample_canvas"]["steps"]
    for step in steps:
        k, x = step["i"], step["x"]
        assert schedule.timestep(k) == int(step["t_replace"])
        assert schedule.log_variance(k) == pytest.approx(step["model_log_variance"].item(), rel=1e-6)
        torch.testing.assert_close(schedule.posterior_mean(step["pred_x0"], k, x), step["model_mean"])
        eps = (float(schedule.sqrt_recip_alphas_cumprod[k]) * x - step["pred_x0"]) / float(
            schedule.sqrt_recipm1_alphas_cumprod[k]
        )
        out = schedule.step(eps, k, x, noise=step["noise"])
        torch.testing.assert_close(out.prev_sample, step["latents_before_guidance"], rtol=1e-5, atol=1e-5)
