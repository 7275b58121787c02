"""VDT_PointPromptingTracker via execute() on the tiny Wan I2V model (random weights: the tracks mean nothing, the
plumbing, shapes, determinism, errors and interrupt are what is checked here; accuracy is proven on a test
backbone in tests/unit/test_point_prompting_tracker.py)."""
from __future__ import annotations

import json

import pytest
import torch

import comfy.model_management

from vdtrack.nodes.point_prompting import VDT_PointPromptingTracker

from vdt_dev.backbone_checks import assert_unchanged, model_state
from .conftest import synthetic_clip

FAST = dict(steps=4, noise_level=0.5, refine_noise_level=0.25, guidance=2.0)


def run(model, vae, clip, points, **kw):
    args = dict(FAST)
    args.update(kw)
    return VDT_PointPromptingTracker.execute(model, vae, clip, points, **args).result


def test_node_outputs_and_determinism(wan_i2v, wan_vae):
    clip = synthetic_clip(9, 32, 48, seed=1)
    tracks, clips, conf = run(wan_i2v, wan_vae, clip, "10,12\n30,20,4", points_per_generation=2)
    assert tracks["track_path"].shape == (9, 2, 2) and tracks["track_visibility"].shape == (9, 2)
    assert tracks["confidence"].shape == (9, 2) and tracks["frame_size"] == (32, 48)
    assert bool(tracks["track_visibility"][0, 0]) and bool(tracks["track_visibility"][4, 1])
    assert torch.equal(tracks["track_path"][4, 1], torch.tensor([30.0, 20.0]))
    # first generation's clip only (point 0: forward from frame 0, one window)
    assert clips.shape == (9, 32, 48, 3) and torch.isfinite(clips).all()
    assert len(json.loads(conf)) == 2
    again = run(wan_i2v, wan_vae, clip, "10,12\n30,20,4", points_per_generation=1)
    assert torch.allclose(again[0]["track_path"], tracks["track_path"], atol=1e-3)
    assert torch.allclose(again[1], clips, atol=1e-4)


def test_all_clips_and_windows(wan_i2v, wan_vae):
    clip = synthetic_clip(13, 32, 32, seed=2)
    tracks, clips, _ = run(wan_i2v, wan_vae, clip, "8,8\n24,24", window=9, overlap=2, refine=False,
                           keep_clips="all generations", points_per_generation=2)
    # 13 frames in windows 0..8 and 4..12: 2 points x 2 windows x 9 frames
    assert clips.shape == (36, 32, 32, 3)
    assert tracks["track_path"].shape == (13, 2, 2)


def test_bad_inputs_name_the_input(wan_i2v, wan_t2v, wan_vae):
    clip = synthetic_clip(5, 32, 32)
    with pytest.raises(ValueError, match="^points"):
        run(wan_i2v, wan_vae, clip, "40,5")
    with pytest.raises(ValueError, match="^images"):
        run(wan_i2v, wan_vae, clip[:1], "4,5")
    with pytest.raises(ValueError, match="^model"):
        run(wan_t2v, wan_vae, clip, "4,5")
    with pytest.raises(ValueError, match="^marker_color"):
        run(wan_i2v, wan_vae, clip, "4,5", marker_color="#00ff00")
    with pytest.raises(ValueError, match="^marker_color"):
        run(wan_i2v, wan_vae, clip, "4,5", marker_color="255,160,160")
    with pytest.raises(ValueError, match="^overlap"):
        run(wan_i2v, wan_vae, clip, "4,5", window=9, overlap=9)
    with pytest.raises(ValueError, match="^mode"):
        run(wan_i2v, wan_vae, clip, "4,5", mode="sideways")


def test_interrupt_stops_and_leaves_the_model_unpatched(wan_i2v, wan_vae):
    clip = synthetic_clip(5, 32, 32)
    before = model_state(wan_i2v)
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run(wan_i2v, wan_vae, clip, "4,5\n20,20")
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert_unchanged(before, model_state(wan_i2v))
