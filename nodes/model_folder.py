"""The pack's own model folder, registered with ComfyUI so its files appear in the core loaders' lists.

<pack>/models/diffusion_models and <pack>/models/vae hold the embedded model the project trains on its synthetic
clips (tools/train_embedded.py; docs/embedded_model.md). They are added to ComfyUI's "diffusion_models" and "vae"
search paths (after the user's own folders), the way other packs add a models path: UNETLoader and VAELoader list
the files without any copying, and nothing is downloaded.
"""
from __future__ import annotations

import os

MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
FOLDERS = ("diffusion_models", "vae")


def register_model_folders() -> list[str]:
    """Add <pack>/models/<kind> to ComfyUI's search paths for each kind in FOLDERS that exists. Returns the
    folders added (idempotent: a folder already listed is not added twice)."""
    import folder_paths

    added = []
    for kind in FOLDERS:
        path = os.path.join(MODELS_DIR, kind)
        if os.path.isdir(path):
            folder_paths.add_model_folder_path(kind, path)
            added.append(path)
    return added
