"""The one interface every video-diffusion adapter implements (ComfyUI-native and diffusers).

Nodes and kernels only talk to a `VideoBackbone`; nothing outside `backbones/` touches model internals.

Conventions shared by all adapters:
- frames: IMAGE-like float tensor [T,H,W,3] in 0..1 (video frames on the first axis).
- noise_level (the one name for it here, in the nodes' inputs and in the features' metadata): the fraction of
  the model's own sampling schedule in ComfyUI's `denoise` sense, 0 = clean, 1 = pure noise; SDEdit runs the
  last round(steps * noise_level) steps of a `steps`-step schedule. It is not t/1000 (shifted flow schedules and
  EDM map it non-linearly): `timestep_from_noise_level` / `noise_level_from_timestep` convert to the paper's
  timestep t in [0, 1000] (the number the model's time embedding receives), so published settings ("t = 261")
  can be reproduced. Out of [0, 1]: ValueError naming `noise_level` (check_noise_level).
- features(...) returns {"block18": VDT_FEATURES, "k18": VDT_FEATURES, ...} built with kernels/datatypes.py
  (make_features, make_feature_meta: one metadata schema); time is per VIDEO frame
  (adapters with temporal VAE compression interpolate back to T).
- Callers (nodes, point_prompting.py) use only what `VideoBackbone` declares, without getattr probing;
  `BackboneBase` implements the parts that are the same for every adapter (window plan, default layer, model
  size, regeneration step counts, batch regeneration as a loop of single ones), and `require_members` refuses an
  object that lacks what a caller needs instead of letting it take another path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, runtime_checkable

import torch

from . import schedules, windows
from .schedules import check_noise_level

KINDS = ("block", "q", "k")
ROPE_MODES = ("before", "after")
CHUNKINGS = ("windows", "anchor")

ProgressFn = Optional[Callable[[], None]]


@dataclass
class FeatureSpec:
    """What to capture in one feature pass.

    layers: block indices (0-based). kinds: subset of ("block", "q", "k"); q/k are the self-attention
    queries/keys after QK-norm, per head. heads: head indices to keep for q/k (None = all).
    rope: q/k "after" (as the attention sees them; HeFT/DiffTrack) or "before" RoPE.
    window / overlap: video frames per window and frames shared by consecutive windows
    (0 window = the model's default window).
    chunking: "windows" (consecutive overlapping windows) or "anchor": DiffTrack's published passes, frame 0 plus
    `window - 1` strided frames each (windows.plan_anchor_chunks); only for adapters with one latent frame per video
    frame. Features then also carry "anchor_passes" (each pass's frames and features, frame 0 first).
    """

    layers: list[int]
    kinds: tuple[str, ...] = ("k",)
    heads: Optional[list[int]] = None
    rope: str = "after"
    window: int = 0
    overlap: int = 0
    chunking: str = "windows"

    def __post_init__(self) -> None:
        self.layers = [int(i) for i in (self.layers if isinstance(self.layers, (list, tuple)) else [self.layers])]
        if not self.layers:
            raise ValueError("layer: at least one layer is needed")
        if isinstance(self.kinds, str):
            self.kinds = (self.kinds,)
        self.kinds = tuple(self.kinds)
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"kind: {bad or self.kinds} not in {KINDS}")
        if self.rope not in ROPE_MODES:
            raise ValueError(f"rope: '{self.rope}' must be one of {ROPE_MODES}")
        if self.heads is not None:
            self.heads = [int(h) for h in self.heads]
            if not self.heads:
                raise ValueError("heads: empty list (use None for all heads)")
        if self.window < 0 or self.overlap < 0:
            raise ValueError("window/overlap: must be >= 0")
        if self.chunking not in CHUNKINGS:
            raise ValueError(f"chunking: '{self.chunking}' must be one of {CHUNKINGS}")

    def keys(self) -> list[str]:
        """Result keys in request order, e.g. ["k18", "block18"]."""
        return [f"{kind}{layer}" for layer in self.layers for kind in self.kinds]


@dataclass
class ImageCond:
    """An image conditioning for image-to-video models (Point Prompting's positive/negative prompt).

    image: IMAGE [1,H,W,3] (or [H,W,3]) 0..1, the first frame.
    clip_vision_output: ComfyUI CLIP_VISION_OUTPUT of the same image (Wan 2.1 I2V uses it), or None.
    text: text conditioning in the family's format (ComfyUI CONDITIONING for native adapters), None = empty prompt.
    """

    image: torch.Tensor
    clip_vision_output: Any = None
    text: Any = None


@runtime_checkable
class VideoBackbone(Protocol):
    family: str                 # "wan", "svd", "cosmos", "i2vgen", "cogvideox"
    num_layers: int
    num_heads: int
    head_dim: int
    temporal_compression: int   # video frames per latent frame (after the first, for causal VAEs)
    spatial_stride: int         # pixels per feature token
    default_window: int         # video frames per window
    window_quantum: int         # window lengths are window_quantum*k+1 frames (1: any length)
    default_layer: int          # the family's usual feature layer, in 0..num_layers-1
    image_prompt: bool          # regenerate() is conditioned on a first-frame image (image-to-video models)

    def model_size(self, h: int, w: int) -> tuple[int, int]: ...

    def encode(self, frames: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def noise_level_from_timestep(self, t: float) -> float: ...

    def timestep_from_noise_level(self, noise_level: float) -> float: ...

    def noise_to(self, latents: torch.Tensor, noise_level: float, seed: int) -> torch.Tensor: ...

    def num_windows(self, num_frames: int, spec: FeatureSpec) -> int: ...

    def features(self, frames: torch.Tensor, noise_level: float, spec: FeatureSpec, seed: int,
                 cond: Any = None, progress: ProgressFn = None) -> dict[str, dict]: ...

    def regen_steps(self, noise_level: float, steps: int) -> int: ...

    def regenerate(self, frames: torch.Tensor, noise_level: float, positive: Any, negative: Any,
                   guidance: float, steps: int, mask: Optional[torch.Tensor] = None, seed: int = 0,
                   progress: ProgressFn = None) -> torch.Tensor: ...

    def regenerate_batch(self, frames: torch.Tensor, noise_level: float, positives: list, negatives: list,
                         guidance: float, steps: int, masks: Optional[torch.Tensor] = None, seed: int = 0,
                         progress: ProgressFn = None) -> torch.Tensor: ...

    def regen_batch_steps(self, noise_level: float, steps: int, batch: int) -> int: ...


class BackboneBase:
    """What every adapter computes the same way. Subclasses set num_layers, default_window, window_quantum,
    pixel_multiple and `paper_layer` (the layer the family's paper reads; None = the last layer), and implement
    `regenerate`; adapters that batch their sampler override `regenerate_batch` and `regen_batch_steps`
    together."""

    paper_layer: Optional[int] = None
    image_prompt = True
    default_window: int
    window_quantum: int
    num_layers: int
    pixel_multiple: int         # frames are resized to the nearest multiples of this (both axes) for the model

    def model_size(self, h: int, w: int) -> tuple[int, int]:
        """The size (H, W) in pixels the model runs at for frames of h x w: the nearest multiples of
        pixel_multiple, at least one (features and regenerations are mapped back to h x w)."""
        return nearest_multiple_size(h, w, self.pixel_multiple)

    @property
    def default_layer(self) -> int:
        """paper_layer clamped to this model's depth (tiny or pruned models have fewer layers)."""
        last = self.num_layers - 1
        return last if self.paper_layer is None else min(int(self.paper_layer), last)

    def window_plan(self, num_frames: int, spec: FeatureSpec) -> list:
        """The windows features() runs for a clip of `num_frames` frames (windows.plan_windows)."""
        return windows.plan_windows(num_frames, spec.window or self.default_window, spec.overlap,
                                    quantum=self.window_quantum)

    def num_windows(self, num_frames: int, spec: FeatureSpec) -> int:
        """Forward passes features() makes (one progress step each): the windows, or with chunking "anchor"
        DiffTrack's passes (windows.plan_anchor_chunks; at least 1)."""
        if spec.chunking == "anchor":
            return max(len(windows.plan_anchor_chunks(num_frames, spec.window or self.default_window)), 1)
        return len(self.window_plan(num_frames, spec))

    def regen_steps(self, noise_level: float, steps: int) -> int:
        """Sampler steps regenerate() runs (one progress step each): SDEdit runs the last round(steps*noise_level)
        of a `steps`-step schedule (schedules.run_steps)."""
        return schedules.run_steps(check_noise_level(noise_level), int(steps))

    def regenerate_batch(self, frames: torch.Tensor, noise_level: float, positives: list, negatives: list,
                         guidance: float, steps: int, masks: Optional[torch.Tensor] = None, seed: int = 0,
                         progress: ProgressFn = None) -> torch.Tensor:
        """frames [B,T,H,W,3] 0..1 with one positive and one negative prompt per item, masks [B,T,H,W] (1 =
        regenerate) or None -> [B,T,H,W,3]; every item with the same seed. This default runs one `regenerate`
        per item (the model read once per item and step); regen_batch_steps counts its progress steps."""
        check_regen_batch(frames, positives, negatives)
        return torch.stack([self.regenerate(frames[b], noise_level, positives[b], negatives[b], guidance, steps,
                                            mask=None if masks is None else masks[b], seed=seed, progress=progress)
                            for b in range(frames.shape[0])])

    def regen_batch_steps(self, noise_level: float, steps: int, batch: int) -> int:
        """Progress steps regenerate_batch makes for `batch` items: one sampler run per item here."""
        return int(batch) * self.regen_steps(noise_level, steps)


def check_regen_batch(frames: torch.Tensor, positives: list, negatives: list) -> None:
    """ValueError naming `frames` unless frames is [B,T,H,W,C] with B positive and B negative prompts."""
    if frames.ndim != 5 or len(positives) != frames.shape[0] or len(negatives) != frames.shape[0]:
        raise ValueError(f"frames: expected [B,T,H,W,3] with B positive and B negative prompts, got "
                         f"{tuple(frames.shape)}, {len(positives)}, {len(negatives)}")


def nearest_multiple_size(h: int, w: int, multiple: int) -> tuple[int, int]:
    """(h, w) rounded to the nearest multiples of `multiple` (pixels), each at least `multiple`."""
    m = int(multiple)
    return max(m, int(round(h / m)) * m), max(m, int(round(w / m)) * m)


def require_members(backbone: Any, names: tuple[str, ...], caller: str) -> None:
    """TypeError naming every entry of `names` (VideoBackbone members `caller` uses) that `backbone` lacks, so
    an incomplete backbone is refused up front (BackboneBase supplies the shared defaults)."""
    missing = [n for n in names if not hasattr(backbone, n)]
    if missing:
        raise TypeError(f"backbone: {type(backbone).__name__} lacks {', '.join(missing)} of the VideoBackbone "
                        f"protocol, which {caller} needs (subclass backbones.protocol.BackboneBase for the shared "
                        f"defaults)")


__all__ = ["FeatureSpec", "ImageCond", "VideoBackbone", "BackboneBase", "KINDS", "ROPE_MODES", "CHUNKINGS",
           "ProgressFn", "check_noise_level", "check_regen_batch", "nearest_multiple_size", "require_members"]
