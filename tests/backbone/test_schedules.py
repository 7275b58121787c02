"""Noise schedules per family: closed forms vs ComfyUI's model_sampling, round trips, statistics."""
from __future__ import annotations

import math

import pytest
import torch

from vdtrack.backbones import schedules as S


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 8.0])
def test_flow_sigma_matches_comfy_and_round_trips(shift):
    import comfy.model_sampling as ms_mod

    ms = ms_mod.ModelSamplingDiscreteFlow()
    ms.set_parameters(shift=shift, multiplier=1000)
    for noise_level in (0.0, 0.05, 0.25, 0.5, 0.9, 1.0):
        s = S.flow_sigma(noise_level, shift)
        assert s == pytest.approx(ms.percent_to_sigma(1.0 - noise_level), abs=1e-7)
        assert S.flow_noise_level(s, shift) == pytest.approx(noise_level, abs=1e-12)
    assert S.flow_sigma(0.5, 8.0) == pytest.approx(4.0 / 4.5)     # hand value


def test_edm_sigma_matches_comfy_and_round_trips():
    import comfy.model_sampling as ms_mod

    ms = ms_mod.ModelSamplingContinuousEDM()
    ms.set_parameters(sigma_min=0.002, sigma_max=700.0, sigma_data=1.0)
    for noise_level in (0.1, 0.5, 0.99):
        s = S.edm_sigma(noise_level, 0.002, 700.0)
        assert s == pytest.approx(ms.percent_to_sigma(1.0 - noise_level), rel=1e-6)   # comfy keeps float32 bounds
        assert S.edm_noise_level(s, 0.002, 700.0) == pytest.approx(noise_level, abs=1e-12)
    assert S.edm_sigma(1.0, 0.002, 700.0) == pytest.approx(700.0)
    assert S.edm_sigma(0.0, 0.002, 700.0) == 0.0


def test_ddpm_timestep_round_trip():
    assert S.ddpm_timestep(0.5) == 500 and S.ddpm_timestep(1.0) == 999
    for t in (0, 261, 999):
        assert S.ddpm_timestep(S.ddpm_noise_level(t)) == t


def test_noised_statistics_per_family():
    z = torch.zeros(200_000)
    eps = S.seeded_noise(z.shape, seed=0)
    c = torch.full_like(z, 3.0)
    s = S.flow_sigma(0.4, 5.0)
    assert S.flow_noise(z, eps, s).std().item() == pytest.approx(s, rel=0.01)
    assert S.flow_noise(c, eps, s).mean().item() == pytest.approx(3.0 * (1 - s), abs=0.01)
    sig = S.edm_sigma(0.5, 0.002, 700.0)
    assert S.edm_noise(z, eps, sig).std().item() == pytest.approx(sig, rel=0.01)
    assert S.edm_noise(c, eps, sig).mean().item() == pytest.approx(3.0, abs=0.01 * sig)
    abar = 0.3
    assert S.ddpm_noise(z, eps, abar).std().item() == pytest.approx(math.sqrt(0.7), rel=0.01)
    assert S.ddpm_noise(c, eps, abar).mean().item() == pytest.approx(3.0 * math.sqrt(0.3), abs=0.01)


def test_seeded_noise_is_deterministic_and_leaves_global_rng():
    torch.manual_seed(123)
    ref = torch.rand(3)
    torch.manual_seed(123)
    a = S.seeded_noise((4, 5), seed=9)
    assert torch.equal(torch.rand(3), ref)
    assert torch.equal(a, S.seeded_noise((4, 5), seed=9))
    assert not torch.equal(a, S.seeded_noise((4, 5), seed=10))


def test_sdedit_tail_runs_the_paper_number_of_steps():
    assert S.run_steps(0.5, 50) == 25 and S.run_steps(0.3, 50) == 15 and S.run_steps(0.0, 50) == 0
    assert S.run_steps(0.001, 50) == 1 and S.run_steps(1.0, 50) == 50
    full = torch.linspace(1.0, 0.0, 51)
    tail = S.sdedit_tail(full, 0.5, start_sigma=0.51)
    assert len(tail) == 26 and tail[0] == pytest.approx(0.51) and tail[-1] == 0
    assert torch.equal(tail[1:], full[-25:])
    assert bool((tail[:-1] > tail[1:]).all())
    with pytest.raises(ValueError, match="noise_level"):
        S.flow_sigma(1.5, 3.0)
