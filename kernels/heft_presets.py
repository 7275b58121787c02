"""HeFT settings per backbone (HeFT, "Denoise to Track", arXiv 2512.04619; the official repository's
configs/{wan,cosmos,cogvideox}_config.sh and scripts/generate_video.py), plus two starting points of ours for
backbones the authors did not publish settings for. docs/presets.md has the table with the sources.

Units: radii and the visibility threshold in pixels at the authors' resolution (`resolution`, (H, W)); frequency
cut = fraction of each RoPE group (T, H, W) dropped from its high-frequency end; noise level = fraction of the
model's own schedule (ComfyUI's denoise sense): HeFT runs only the last of its N sampling steps, so 1 / N; window =
video frames per pass (HeFT's chunk_size, 25 for every model).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class HeftPreset:
    name: str
    model: str                          # Hugging Face id of the model the settings were found on
    layer: int                          # transformer block, 0-based
    heads: str                          # one head id, or "all" (heads concatenated: HeFT's layer baseline)
    rope_dims: tuple[int, int, int]     # channels of the (T, H, W) RoPE groups of one head
    freq_low: float                     # fraction of each RoPE group dropped (highest frequencies first)
    freq_high: float
    argmax_radius: float                # px
    search_radius: float                # px
    vis_threshold: float                # px
    ema_alpha: float
    noise_level: float
    window: int                         # video frames per feature pass
    resolution: tuple[int, int]         # (H, W) the radii were tuned at
    published: bool                     # False = our starting point, run the head search for this model
    source: str

    def as_dict(self) -> dict:
        return asdict(self)


_HEFT = "HeFT official code"
PRESETS: dict[str, HeftPreset] = {p.name: p for p in (
    HeftPreset("Wan2.1-1.3B", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", 18, "1", (44, 42, 42), 0.15, 1.0, 17.0, 42.0,
               18.0, 0.05, 1 / 50, 25, (480, 832), True, f"{_HEFT}: configs/wan_config.sh (step 49 of 50)"),
    HeftPreset("Cosmos-Predict2-2B", "nvidia/Cosmos-Predict2-2B-Video2World", 18, "6", (44, 42, 42), 0.1, 1.0,
               18.0, 42.0, 26.0, 0.05, 1 / 35, 25, (704, 1280), True,
               f"{_HEFT}: configs/cosmos_config.sh (step 34 of 35; the authors' default backbone)"),
    HeftPreset("CogVideoX-2B", "THUDM/CogVideoX-2b", 15, "19", (16, 24, 24), 0.0, 1.0, 13.0, 43.0, 27.0, 0.1,
               1 / 50, 25, (480, 720), True, f"{_HEFT}: configs/cogvideox_config.sh (step 49 of 50)"),
    HeftPreset("Wan2.1-14B", "Wan-AI/Wan2.1-T2V-14B", 24, "all", (44, 42, 42), 0.15, 1.0, 17.0, 42.0, 18.0, 0.05,
               1 / 50, 25, (480, 832), False,
               "our choice (not published): Wan2.1-1.3B's settings, the layer at the same relative depth (18 of "
               "30 -> 24 of 40), all heads until a head search picks one"),
    HeftPreset("CogVideoX-5B", "THUDM/CogVideoX-5b", 21, "all", (16, 24, 24), 0.0, 1.0, 13.0, 43.0, 27.0, 0.1,
               1 / 50, 25, (480, 720), False,
               "our choice (not published): CogVideoX-2B's settings, the layer at the same relative depth (15 of "
               "30 -> 21 of 42), all heads until a head search picks one"),
)}


def get_preset(name: str) -> HeftPreset:
    """The preset called `name`; ValueError naming the input `preset` otherwise."""
    if name not in PRESETS:
        raise ValueError(f"preset: expected one of {list(PRESETS)}, got {name!r}")
    return PRESETS[name]


def presets_markdown() -> str:
    """The preset table as markdown (docs/presets.md and the README hold its output)."""
    head = ("| Preset | Layer | Head | RoPE dims (T,H,W) | Freq. cut | argmax / search radius (px) | vis. threshold "
            "(px) | EMA alpha | Noise level | Window | Resolution | Source |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for p in PRESETS.values():
        rows.append(f"| {p.name} | {p.layer} | {p.heads} | {','.join(map(str, p.rope_dims))} | "
                    f"{p.freq_low:g}-{p.freq_high:g} | {p.argmax_radius:g} / {p.search_radius:g} | "
                    f"{p.vis_threshold:g} | {p.ema_alpha:g} | {p.noise_level:.4f} | {p.window} | "
                    f"{p.resolution[0]}x{p.resolution[1]} | {p.source} |")
    return head + "\n".join(rows) + "\n"
