"""Tracks that drive motion: what a tracks-to-video graph needs besides the pack's trackers and
`VDT Tracks To ATI` (core `WanTrackToVideo` reads its JSON; core's TRACKS-consuming Wan nodes, where the running
ComfyUI has them, take the TRACKS output directly)."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from .common import category
from .inputs import VdtNode

WAN_TEXT_TOKENS = 512      # ComfyUI pads umT5 to 512 tokens and zeroes the padding
CLIP_TEXT_TOKENS = 77


def text_width(model) -> tuple[int, int]:
    """(tokens, width) of the text context a loaded MODEL expects: Wan's text_embedding input (umT5, 4096) with
    512 tokens, a UNet's cross-attention context_dim with 77 tokens. ValueError naming `model` otherwise."""
    base = getattr(model, "model", None)
    dm = getattr(base, "diffusion_model", None)
    emb = getattr(dm, "text_embedding", None)
    if emb is not None and hasattr(emb[0], "in_features"):
        return WAN_TEXT_TOKENS, int(emb[0].in_features)
    ctx = getattr(getattr(base, "model_config", None), "unet_config", {}).get("context_dim")
    if ctx:
        return CLIP_TEXT_TOKENS, int(ctx)
    raise ValueError(f"model: cannot tell the text width of {type(base).__name__ if base is not None else model!r} "
                     "(supported: Wan DiTs and UNets with cross-attention)")


class VDT_ZeroConditioning(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_ZeroConditioning",
            display_name="VDT Zero Conditioning",
            category=category("motion"),
            description="An all-zero text conditioning sized for the model (Wan: 512 x 4096 umT5 tokens; UNets: "
                        "77 x context width), for graphs run without a text encoder loaded. ComfyUI zeroes umT5's "
                        "padding, so for Wan this is the empty prompt without its end token.",
            inputs=[io.Model.Input("model", tooltip="The model the conditioning is for (its text width is read).")],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, model) -> io.NodeOutput:
        tokens, width = text_width(model)
        return io.NodeOutput([[torch.zeros(1, tokens, width), {}]])


NODES = [VDT_ZeroConditioning]
