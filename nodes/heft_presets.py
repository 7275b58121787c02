"""HeFT presets: one node gives a backbone's published settings as values to link into the extraction,
head-selection and tracking nodes' widgets (a widget left unlinked keeps its own, custom value)."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..kernels.heft_presets import PRESETS, get_preset
from .common import category
from .inputs import VdtNode


class VDT_HeFTPreset(VdtNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VDT_HeFTPreset",
            display_name="VDT HeFT Preset",
            category=category("tracking"),
            description="HeFT's settings for a backbone (layer, head, RoPE band cut, noise level, window, radii, "
                        "visibility threshold, EMA weight), from the authors' configs; link the outputs into the "
                        "matching widgets of Extract Diffusion Features, Select Heads/Frequencies and the HeFT "
                        "tracker. Wan2.1-14B and CogVideoX-5B have no published settings: their presets are our "
                        "starting points (all heads), to refine with VDT HeFT Head Search.",
            inputs=[
                io.Combo.Input("preset", options=list(PRESETS), default="Wan2.1-1.3B",
                               tooltip="Backbone. Published (HeFT configs): Wan2.1-1.3B, Cosmos-Predict2-2B, "
                                       "CogVideoX-2B. Ours (not published): Wan2.1-14B, CogVideoX-5B."),
            ],
            outputs=[
                io.Int.Output(display_name="layer"),
                io.String.Output(display_name="heads"),
                io.String.Output(display_name="rope_dims"),
                io.Float.Output(display_name="freq_low"),
                io.Float.Output(display_name="freq_high"),
                io.Float.Output(display_name="noise_level"),
                io.Int.Output(display_name="window"),
                io.Float.Output(display_name="argmax_radius"),
                io.Float.Output(display_name="search_radius"),
                io.Float.Output(display_name="vis_threshold"),
                io.Float.Output(display_name="ema_alpha"),
                io.String.Output(display_name="summary"),
            ],
        )

    @classmethod
    def execute(cls, preset) -> io.NodeOutput:
        p = get_preset(preset)
        summary = (f"{p.name} ({p.model}): layer {p.layer}, heads {p.heads}, RoPE dims "
                   f"{','.join(map(str, p.rope_dims))}, band cut {p.freq_low:g}-{p.freq_high:g}, noise level "
                   f"{p.noise_level:.4f}, window {p.window} frames, argmax/search radius {p.argmax_radius:g}/"
                   f"{p.search_radius:g} px, visibility threshold {p.vis_threshold:g} px, EMA {p.ema_alpha:g}; "
                   f"radii tuned at {p.resolution[0]}x{p.resolution[1]} (scale them with your frame size). "
                   f"Source: {p.source}.")
        return io.NodeOutput(p.layer, p.heads, ",".join(map(str, p.rope_dims)), p.freq_low, p.freq_high,
                             p.noise_level, p.window, p.argmax_radius, p.search_radius, p.vis_threshold,
                             p.ema_alpha, summary, ui=ui.PreviewText(summary))


NODES = [VDT_HeFTPreset]
