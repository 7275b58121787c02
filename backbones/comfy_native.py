"""What the nodes need to know of a loaded ComfyUI MODEL: the native adapter for its model class
(`backbone_from_model`) and the size of the text conditioning it takes (`text_context_size`)."""
from __future__ import annotations

from typing import Any

from .comfy_cosmos import ComfyCosmosBackbone, is_cosmos_model
from .comfy_svd import ComfySVDBackbone, is_svd_model
from .comfy_wan import WAN_TEXT_LEN, ComfyWanBackbone, is_wan_model

CLIP_TEXT_TOKENS = 77      # CLIP's context length, which ComfyUI's SD/SVD text encoders pad to


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


def text_context_size(model) -> tuple[int, int]:
    """(tokens, width) of the text conditioning a loaded MODEL takes, for an all-zero conditioning of the right
    size: a DiT with Wan's text embedding (its input width, umT5's 4096 on the real models) takes WAN_TEXT_LEN = 512
    tokens (ComfyUI pads umT5 to 512 and zeroes the padding); a UNet with cross-attention takes CLIP's 77 tokens of
    its config's context_dim. Raises a ValueError naming the `model` input for anything else."""
    base = getattr(model, "model", None)
    emb = getattr(getattr(base, "diffusion_model", None), "text_embedding", None)
    if emb is not None and hasattr(emb[0], "in_features"):
        return WAN_TEXT_LEN, int(emb[0].in_features)
    ctx = getattr(getattr(base, "model_config", None), "unet_config", {}).get("context_dim")
    if ctx:
        return CLIP_TEXT_TOKENS, int(ctx)
    raise ValueError(f"model: cannot tell the text width of {model_kind(model)} "
                     "(supported: Wan DiTs and UNets with cross-attention)")
