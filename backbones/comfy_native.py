"""Pick the ComfyUI-native adapter for a loaded MODEL by its model class."""
from __future__ import annotations

from typing import Any

from .comfy_cosmos import ComfyCosmosBackbone, is_cosmos_model
from .comfy_svd import ComfySVDBackbone, is_svd_model
from .comfy_wan import ComfyWanBackbone, is_wan_model


def model_kind(model) -> str:
    base = getattr(model, "model", None)
    return type(base).__name__ if base is not None else type(model).__name__


def backbone_from_model(model, vae, text: Any = None):
    """VideoBackbone over a ComfyUI MODEL + VAE: Wan 2.1/2.2 (WanModel DiT), Cosmos-Predict2 (MiniTrainDIT) and
    SVD (SVD_img2vid). Anything else raises a ValueError naming the `model` input."""
    if model is None:
        raise ValueError("model: no model connected (load Wan or Cosmos-Predict2 with 'Load Diffusion Model', "
                         "or SVD with 'Image Only Checkpoint Loader')")
    if is_wan_model(model):
        return ComfyWanBackbone(model, vae, text=text)
    if is_cosmos_model(model):
        return ComfyCosmosBackbone(model, vae, text=text)
    if is_svd_model(model):
        return ComfySVDBackbone(model, vae, text=text)
    raise ValueError(f"model: {model_kind(model)} is not supported by the ComfyUI-native adapters "
                     "(supported: Wan 2.1 / 2.2 T2V and I2V and Cosmos-Predict2 loaded with 'Load Diffusion Model', "
                     "SVD with 'Image Only Checkpoint Loader')")
