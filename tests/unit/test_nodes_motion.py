"""Tracks driving motion: core TRACKS payloads with one visibility per frame are accepted (broadcast over the
tracks), and the all-zero text conditioning is sized from the model."""
from __future__ import annotations

import types

import pytest
import torch

from vdtrack.kernels.datatypes import check_tracks
from vdtrack.backbones.comfy_native import text_context_size
from vdtrack.nodes.motion import VDT_ZeroConditioning


def test_visibility_per_frame_broadcasts():
    path = torch.zeros(5, 3, 2)
    vis = torch.tensor([[1], [0], [1], [1], [0]], dtype=torch.bool)
    p, v = check_tracks("tracks", {"track_path": path, "track_visibility": vis})
    assert v.shape == (5, 3) and v[:, 2].tolist() == [True, False, True, True, False]
    with pytest.raises(ValueError, match="tracks: track_visibility"):
        check_tracks("tracks", {"track_path": path, "track_visibility": torch.ones(4, 1, dtype=torch.bool)})


def _model(dm, unet_config=None):
    base = types.SimpleNamespace(diffusion_model=dm, model_config=types.SimpleNamespace(unet_config=unet_config or {}))
    return types.SimpleNamespace(model=base)


def test_zero_conditioning_sizes():
    wan = _model(types.SimpleNamespace(text_embedding=torch.nn.Sequential(torch.nn.Linear(4096, 8))))
    assert text_context_size(wan) == (512, 4096)
    (cond, extra), = VDT_ZeroConditioning.execute(wan).result[0]
    assert cond.shape == (1, 512, 4096) and not cond.any() and extra == {}
    assert text_context_size(_model(object(), {"context_dim": 768})) == (77, 768)
    with pytest.raises(ValueError, match="model"):
        text_context_size(_model(object()))
