"""Noise schedules per model family, as plain math (no ComfyUI import), shared by every adapter.

`noise_level` in [0,1] is the fraction of the model's own sampling schedule (ComfyUI's `denoise` sense, noise_level 1 =
pure noise); the paper timestep `t` in [0,1000] is what the model's time embedding receives.

- Flow matching (Wan, Cosmos-Predict2 in diffusers): sigma = shift*l / (1 + (shift-1)*l) (the SD3/Wan time
  shift of the uniform noise_level), x = (1-sigma)*x0 + sigma*eps, t = 1000*sigma.
- EDM (SVD): log sigma linear in noise_level between sigma_min and sigma_max (ComfyUI's percent_to_sigma),
  x = x0 + sigma*eps.
- DDPM (I2VGen-XL, CogVideoX): t = noise_level*(num_train_timesteps-1), x = sqrt(abar_t)*x0 + sqrt(1-abar_t)*eps.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


def check_noise_level(noise_level: float) -> float:
    """`noise_level` as a float; ValueError naming `noise_level` unless it is in [0, 1] (NaN included)."""
    noise_level = float(noise_level)
    if not (0.0 <= noise_level <= 1.0):
        raise ValueError(f"noise_level: {noise_level} must be in [0, 1]")
    return noise_level


# ---------------------------------------------------------------- flow matching
def flow_sigma(noise_level: float, shift: float) -> float:
    noise_level = check_noise_level(noise_level)
    if shift == 1.0:
        return noise_level
    return shift * noise_level / (1.0 + (shift - 1.0) * noise_level)


def flow_noise_level(sigma: float, shift: float) -> float:
    """Inverse of flow_sigma."""
    sigma = min(max(float(sigma), 0.0), 1.0)
    if shift == 1.0:
        return sigma
    return sigma / (shift - (shift - 1.0) * sigma)


def flow_noise(x0: torch.Tensor, eps: torch.Tensor, sigma: float) -> torch.Tensor:
    return (1.0 - sigma) * x0 + sigma * eps


# ---------------------------------------------------------------- EDM
def edm_sigma(noise_level: float, sigma_min: float, sigma_max: float) -> float:
    noise_level = check_noise_level(noise_level)
    if noise_level == 0.0:
        return 0.0
    return math.exp(math.log(sigma_min) + noise_level * (math.log(sigma_max) - math.log(sigma_min)))


def edm_noise_level(sigma: float, sigma_min: float, sigma_max: float) -> float:
    if sigma <= 0.0:
        return 0.0
    lv = (math.log(sigma) - math.log(sigma_min)) / (math.log(sigma_max) - math.log(sigma_min))
    return min(max(lv, 0.0), 1.0)


def edm_noise(x0: torch.Tensor, eps: torch.Tensor, sigma: float) -> torch.Tensor:
    return x0 + sigma * eps


# ---------------------------------------------------------------- DDPM
def ddpm_timestep(noise_level: float, num_train_timesteps: int = 1000) -> int:
    return int(round(check_noise_level(noise_level) * (num_train_timesteps - 1)))


def ddpm_noise_level(t: float, num_train_timesteps: int = 1000) -> float:
    return min(max(float(t) / (num_train_timesteps - 1), 0.0), 1.0)


def ddpm_noise(x0: torch.Tensor, eps: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    return math.sqrt(alpha_bar) * x0 + math.sqrt(1.0 - alpha_bar) * eps


# ---------------------------------------------------------------- shared helpers
def seeded_noise(shape: Sequence[int], seed: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise from a private CPU generator: same seed -> same noise on every device,
    and the global RNG is left alone."""
    g = torch.Generator(device="cpu").manual_seed(int(seed) & 0xFFFFFFFFFFFFFFFF)
    return torch.randn(tuple(shape), generator=g, dtype=torch.float32).to(device=device, dtype=dtype)


def run_steps(noise_level: float, steps: int) -> int:
    """SDEdit: of a `steps`-step schedule, the last round(steps*noise_level) steps are run (at least 1 when
    noise_level > 0); paper 'strength 0.5 of 50 steps' -> 25."""
    noise_level = check_noise_level(noise_level)
    if steps < 1:
        raise ValueError(f"steps: {steps} must be >= 1")
    if noise_level == 0.0:
        return 0
    return max(1, min(steps, int(round(steps * noise_level))))


def sdedit_tail(full_sigmas: torch.Tensor, noise_level: float, start_sigma: float) -> torch.Tensor:
    """Tail of a full descending schedule (len steps+1, ending at 0) that starts exactly at `start_sigma`
    (the sigma that noise_to(noise_level) uses), so SDEdit starts from the latent noise_to produced."""
    steps = len(full_sigmas) - 1
    n = run_steps(noise_level, steps)
    if n == 0:
        return full_sigmas[-1:].clone()
    tail = full_sigmas[-(n + 1):].clone().float()
    tail[0] = float(start_sigma)
    return tail
