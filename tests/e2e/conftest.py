"""One real ComfyUI server for the whole end-to-end session, with the pack linked in and the tiny models
the project builds itself placed in its model folders (nothing is downloaded)."""
from __future__ import annotations

import os

import pytest
from vdt_dev.comfy_server import ComfyServer
from vdt_dev.make_synthetic import write_clip_mp4, write_clip_with_truth
from vdt_dev.make_tiny_diffusers import build_tiny_diffusers
from vdt_dev.make_tiny_models import build_tiny_models
from vdt_dev.make_tiny_unets import build_tiny_unets


def _build_models(models_dir: str) -> None:
    """Tiny models in ComfyUI-native layouts (and diffusers folders), built by the project's own tools."""
    build_tiny_models(models_dir)
    build_tiny_unets(models_dir)      # SD 1.x and SVD UNets + TAESD (TED, Track4Gen workflows)
    build_tiny_diffusers(os.path.join(models_dir, "diffusers"))


# the video the shipped LoadVideo workflow names (vdtrack_video_flow_tracking); a synthetic clip, encoded here
SYNTHETIC_VIDEO = "vdtrack_synthetic.mp4"
# the folder the shipped clip-folder workflow names (vdtrack_clip_folder_report): clips with ground truth beside
CLIP_FOLDER, CLIP_FOLDER_SEEDS = "vdtrack_clips", (1, 2, 3)


def _write_inputs(input_dir: str) -> None:
    write_clip_mp4(os.path.join(input_dir, SYNTHETIC_VIDEO), seed=0, frames=16, size=(160, 160))
    for seed in CLIP_FOLDER_SEEDS:
        write_clip_with_truth(os.path.join(input_dir, CLIP_FOLDER, f"shot_{seed}.mp4"), seed=seed, frames=10,
                              size=(96, 96))


@pytest.fixture(scope="session")
def server():
    srv = ComfyServer()
    _build_models(srv.path("models"))
    _write_inputs(srv.path("input"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def object_info(server):
    return server.object_info()
