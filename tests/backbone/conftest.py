"""Tiny ComfyUI-native Wan models, built once per test session into a temporary models folder and loaded
through ComfyUI's own loaders (comfy.sd.load_diffusion_model = UNETLoader, comfy.sd.VAE = VAELoader)."""
from __future__ import annotations

import os
import socket

import pytest
import torch
from vdt_dev import make_tiny_models


@pytest.fixture
def offline(monkeypatch):
    """No network: the Hugging Face hub is off and any socket connection fails the test (the diffusers tests
    use it: everything they load is local)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*a, **k):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)


def _make_tiny_models_module():
    return make_tiny_models


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """{kind: path} of the tiny models, written into a session temp dir (never committed)."""
    d = tmp_path_factory.mktemp("vdt_tiny_models")
    return _make_tiny_models_module().build_tiny_models(str(d))


@pytest.fixture(scope="session")
def tiny_models_dir(tiny_models):
    return os.path.dirname(os.path.dirname(tiny_models["wan_vae"]))


def _load_unet(path):
    import comfy.sd

    return comfy.sd.load_diffusion_model(path)


@pytest.fixture(scope="session")
def wan_t2v(tiny_models):
    return _load_unet(tiny_models["wan_t2v"])


@pytest.fixture(scope="session")
def wan_i2v(tiny_models):
    return _load_unet(tiny_models["wan_i2v"])


@pytest.fixture(scope="session")
def wan_i2v_clip(tiny_models):
    return _load_unet(tiny_models["wan_i2v_clip"])


@pytest.fixture(scope="session")
def wan22(tiny_models):
    return _load_unet(tiny_models["wan22_ti2v"])


@pytest.fixture(scope="session")
def cosmos(tiny_models):
    return _load_unet(tiny_models["cosmos_v2w"])


@pytest.fixture(scope="session")
def wan_vae(tiny_models):
    import comfy.sd
    import comfy.utils

    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(tiny_models["wan_vae"]))


@pytest.fixture(scope="session")
def wan22_vae(tiny_models):
    return _make_tiny_models_module().load_tiny_wan22_vae(tiny_models["wan22_vae"])


@pytest.fixture(autouse=True)
def _no_grad():
    """ComfyUI runs nodes under inference mode; tests do the same."""
    with torch.inference_mode():
        yield


def synthetic_clip(frames: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth moving pattern [T,H,W,3] in 0..1 (deterministic)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, 4, 4, generator=g)
    out = []
    for t in range(frames):
        img = torch.nn.functional.interpolate(base[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        out.append(torch.roll(img, shifts=(t, 2 * t), dims=(1, 2)).permute(1, 2, 0))
    return torch.stack(out).clamp(0, 1)
