"""Untrusted diffusers model folders through the real server (issue 11, item 7): a truncated weights file and a
folder whose VAE holds an unknown tensor (its transformer loads first) each fail the prompt with an error naming
the loader's input and the file, and the server runs the same graph on the good folder afterwards. (That nothing
of a failed load stays referenced is checked in tests/backbone/test_diffusers_untrusted.py, where the modules can
be watched.)"""
from __future__ import annotations

import os
import shutil

import torch
from safetensors.torch import load_file, save_file
from vdtrack.batch.client import execution_error

GOOD = "tiny_cogvideox"


def _prompt(model: str) -> dict:
    """Synthetic clip -> diffusers backbone -> block features -> nearest-neighbour tracks -> saved tracks."""
    return {
        "1": {"class_type": "VDT_SyntheticClip",
              "inputs": {"seed": 0, "frames": 6, "width": 64, "height": 64, "num_objects": 1, "points_per_object": 2,
                         "background_points": 0, "variant": "moving_objects"}},
        "2": {"class_type": "VDT_LoadDiffusersBackbone",
              "inputs": {"model": model, "family": "auto", "vae": "(from the model folder)", "dtype": "auto",
                         "frame_as_latent": True}},
        "3": {"class_type": "VDT_ExtractBackboneFeatures",
              "inputs": {"backbone": ["2", 0], "images": ["1", 0], "noise_level": 0.3, "timestep": -1, "layer": -1,
                         "kind": "block", "window": 0, "overlap": 2, "seed": 0, "chunking": "auto"}},
        "4": {"class_type": "VDT_TrackNearestNeighbour",
              "inputs": {"features": ["3", 0], "points": "20,20", "threshold": 0.6, "refine_radius": 0,
                         "refine_temperature": 0.05}},
        "5": {"class_type": "VDT_SaveTracks",
              "inputs": {"tracks": ["4", 0], "format": "json", "filename_prefix": "vdtrack/untrusted_models"}},
    }


def _bad_folders(diffusers_dir: str) -> dict[str, str]:
    """{folder name: the file its error must name}."""
    out = {}
    trunc = os.path.join(diffusers_dir, "e2e_truncated")
    shutil.copytree(os.path.join(diffusers_dir, GOOD), trunc, dirs_exist_ok=True)
    weights = os.path.join(trunc, "transformer", "diffusion_pytorch_model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 3)
    out["e2e_truncated"] = "e2e_truncated/transformer/diffusion_pytorch_model.safetensors"
    keys = os.path.join(diffusers_dir, "e2e_vae_keys")
    shutil.copytree(os.path.join(diffusers_dir, GOOD), keys, dirs_exist_ok=True)
    vae = os.path.join(keys, "vae", "diffusion_pytorch_model.safetensors")
    sd = load_file(vae)
    sd["decoder.unknown.weight"] = torch.zeros(3)
    save_file(sd, vae)
    out["e2e_vae_keys"] = "e2e_vae_keys/vae/diffusion_pytorch_model.safetensors"
    return out


def test_untrusted_model_folders_fail_cleanly(server):
    bad = _bad_folders(server.path("models", "diffusers"))
    for name, file in bad.items():
        status, r = server.queue(_prompt(f"diffusers/{name}"))
        assert status == 200, r
        h = server.wait(r["prompt_id"])
        err = execution_error(h)
        assert h["status"]["status_str"] == "error" and err and err["node_id"] == "2", h["status"]
        msg = err["exception_message"]
        assert msg.startswith("model: ") and file in msg, msg
        assert "Traceback" not in msg
    h = server.run(_prompt(f"diffusers/{GOOD}"))
    assert h["status"]["status_str"] == "success", h["status"]
    assert server.post("/free", {"unload_models": True, "free_memory": True})[0] == 200
    assert server.get("/system_stats")
