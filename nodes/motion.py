"""Tracks that drive motion: what a tracks-to-video graph needs besides the pack's trackers and
`VDT Tracks To ATI` (core `WanTrackToVideo` reads its JSON; core's TRACKS-consuming Wan nodes, where the running
ComfyUI has them, take the TRACKS output directly)."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..backbones.comfy_native import text_context_size
from .common import category
from .inputs import VdtNode


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
        tokens, width = text_context_size(model)
        return io.NodeOutput([[torch.zeros(1, tokens, width), {}]])


NODES = [VDT_ZeroConditioning]
