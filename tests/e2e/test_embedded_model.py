"""The pack's own model folder inside a real ComfyUI: the embedded model appears in the core loaders' lists
without being copied into the server's models folder."""
import os

import pytest

pytestmark = pytest.mark.e2e

EMBEDDED = {"UNETLoader": ("unet_name", "vdtrack_embedded_wan_i2v.safetensors"),
            "VAELoader": ("vae_name", "vdtrack_embedded_wan_vae.safetensors")}


@pytest.mark.parametrize("loader", sorted(EMBEDDED))
def test_embedded_model_is_listed_by_the_core_loader(server, object_info, loader):
    widget, name = EMBEDDED[loader]
    options = object_info[loader]["input"]["required"][widget][0]
    assert name in options
    # listed from the pack's folder, not from a copy in the server's own models folder
    assert not any(name in files for _, _, files in os.walk(server.path("models")))
