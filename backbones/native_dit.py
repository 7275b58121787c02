"""The base of the ComfyUI-native DiT adapters (Wan 2.1/2.2 in comfy_wan.py, Cosmos-Predict2 in comfy_cosmos.py):
a loaded MODEL (ModelPatcher) + VAE whose DiT turns a [1,C,t,h,w] latent into t*h'*w' tokens.

What is the same for every such DiT lives here: reading the model (blocks, heads, latent channels, token
stride), VAE encode/decode in model space (process_latent_in of the VAE latent), text conditioning, one captured
forward pass on a `model.clone()` (capture.py), the token -> grid reshape, the feature window loop
(windows.run_windows) and the frame-level regeneration wrapper. Each family fills in its schedule
(sigma_at / timestep_from_noise_level / noise_level_from_timestep / noise_to), its image conditioning
(_image_extra), its capture class and its regeneration sampler (regenerate_latent), plus the class attributes
listed below.
"""
from __future__ import annotations

import abc
from typing import Any, Optional

import torch

import comfy.model_management

from . import windows
from .capture import DitCapture
from .native_batch import BatchRegeneration
from .native_common import (FIRST_LATENT_KEY, NativeRegeneration, captured_forward, first_frame, guided_euler,
                            install_first_frames, require_model, require_vae, resize_frames)
from ..kernels.datatypes import make_feature_meta, make_features
from .protocol import BackboneBase, FeatureSpec, ImageCond, ProgressFn, check_noise_level

HEFT_LAYER = 18        # HeFT's feature layer for Wan2.1-1.3B and Cosmos-Predict2-2B (clamped to the model)


class NativeDiTBackbone(BatchRegeneration, NativeRegeneration, BackboneBase, abc.ABC):
    # ---- what each family sets
    family: str
    rope_layout: str                 # channel layout of the RoPE pairs in q/k ("interleaved", "half_split")
    temporal_compression = 4         # causal video VAE (Wan 2.1 / 2.2 VAE): 4 frames per latent after the first
    window_quantum = 4
    default_window: int
    paper_layer = HEFT_LAYER
    ti2v = False                     # the first frame conditions through the latent itself (Wan 2.2 TI2V)
    _expected_model: str             # "a Wan model (WanModel DiT)", for the `model` error
    _needed_vae: str                 # the `vae` error, formatted with c = latent channels
    _capture_class = DitCapture
    _regen_scheduler: str            # ComfyUI scheduler name of regenerate's schedule
    _empty_text_len: int             # tokens of the all-zero context that stands for the empty prompt
    _text_encoder: str               # named in the conditioning-width error

    @staticmethod
    @abc.abstractmethod
    def _is_model(model) -> bool:
        """True for a ModelPatcher of this family."""

    @abc.abstractmethod
    def _read_dit(self, base, dm) -> None:
        """Set head_dim, in_channels, image_input, uses_clip, text_dim, rope_groups (and family extras)."""

    @staticmethod
    @abc.abstractmethod
    def _dit_patch(dm) -> int:
        """Latent cells per token along one spatial axis."""

    @abc.abstractmethod
    def _read_sampling(self) -> None:
        """Read the schedule constants from self.model_sampling."""

    @abc.abstractmethod
    def _dit_name(self, base, dm) -> str:
        """The backbone name written into the features' metadata."""

    @abc.abstractmethod
    def sigma_at(self, noise_level: float) -> float:
        """ComfyUI's sampler sigma at `noise_level`."""

    @abc.abstractmethod
    def _image_extra(self, cond: Optional[ImageCond], length: int, size: tuple[int, int],
                     need_image: bool) -> dict:
        """Conditioning keys for first-frame conditioning of a `length`-frame clip at pixel `size`."""

    @abc.abstractmethod
    def regenerate_latent(self, x0: torch.Tensor, noise_level: float, positive: list, negative: list,
                          guidance: float, steps: int, latent_mask: Optional[torch.Tensor] = None,
                          seed: int = 0, progress: ProgressFn = None) -> torch.Tensor:
        """Guided SDEdit on a model-space latent with CONDITIONING lists."""

    def __init__(self, model, vae, text: Any = None):
        """ValueError naming `model` / `vae` when they are not this family's."""
        require_model(self._is_model(model), model, self._expected_model)
        self.model = model
        self.vae = vae
        base = model.model
        dm = base.diffusion_model
        self.num_layers = len(dm.blocks)
        self.num_heads = int(dm.num_heads)
        self.latent_channels = int(base.latent_format.latent_channels)
        self._read_dit(base, dm)
        require_vae(vae, self.latent_channels, self._needed_vae.format(c=self.latent_channels))
        self.vae_stride = int(vae.downscale_index_formula[1]) if hasattr(vae, "downscale_index_formula") else 8
        self.spatial_stride = self.vae_stride * self._dit_patch(dm)
        self.pixel_multiple = self.spatial_stride              # model_size: multiples of the token stride
        self.model_sampling = model.get_model_object("model_sampling")
        self._read_sampling()
        self.text = text
        self.name = self._dit_name(base, dm)
        self.last_blocks_run: list[int] = []

    @property
    def image_prompt(self) -> bool:
        return bool(self.image_input or self.ti2v)

    # ---------------------------------------------------------------- VAE
    _resize = staticmethod(resize_frames)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """[T,H,W,3] 0..1 (H,W multiples of spatial_stride) -> model-space latent [1,C,t,h,w]."""
        raw = self.vae.encode(frames[..., :3])
        return self.model.model.process_latent_in(raw.float())

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raw = self.model.model.process_latent_out(latents.float())
        img = self.vae.decode(raw)
        return img.reshape(-1, *img.shape[-3:]).float()

    # ---------------------------------------------------------------- conditioning
    def _text(self, text: Any) -> list:
        """CONDITIONING list; None = the empty prompt as an all-zero context (_empty_text_len tokens)."""
        if text is None:
            return [[torch.zeros(1, self._empty_text_len, self.text_dim), {}]]
        if not isinstance(text, list) or not text or not isinstance(text[0], (list, tuple)):
            raise ValueError("conditioning: expected a ComfyUI CONDITIONING (list of [tensor, dict])")
        width = text[0][0].shape[-1]
        if width != self.text_dim:
            raise ValueError(f"conditioning: text embeddings are {width}-wide but the model expects "
                             f"{self.text_dim} (use {self._text_encoder})")
        return text

    def _conds(self, text: Any, extra: dict) -> list:
        return [[c[0], {**c[1], **extra}] for c in self._text(text)]

    def _first_latent_extra(self, image: torch.Tensor, length: int, size: tuple[int, int], mask_key: str) -> dict:
        """The model-space latent of `image` as FIRST_LATENT_KEY (written per branch by install_first_frames) and a
        known-frame mask under `mask_key` (0 on that latent frame, 1 on the rest of a `length`-frame clip)."""
        first = self.encode(first_frame(image, size))             # causal VAE: frame 0 alone = latent frame 0
        t = (length - 1) // self.temporal_compression + 1
        mask = torch.ones((1, 1, t, first.shape[-2], first.shape[-1]), device=first.device)
        mask[:, :, : first.shape[2]] = 0.0
        return {mask_key: mask, FIRST_LATENT_KEY: first}

    # ---------------------------------------------------------------- one captured forward pass
    def capture_latent(self, x0: torch.Tensor, noise_level: float, spec: FeatureSpec, seed: int,
                       conds: list, stop_early: bool = True) -> dict[str, torch.Tensor]:
        """One conditional forward pass at `noise_level` on the model-space latent x0; returns the raw captures
        (tokens) keyed like "k18" and records the blocks that ran in self.last_blocks_run. The shared model is
        untouched (everything is installed on a clone)."""
        self._check_spec(spec)
        m = self.model.clone()
        install_first_frames(m, conds, conds)
        cap = self._capture_class(spec, self.num_heads, stop_early=stop_early,
                                  to_device=comfy.model_management.intermediate_device())
        try:
            return captured_forward(m, cap, x0, self.sigma_at(noise_level), spec, seed, conds)
        finally:
            self.last_blocks_run = list(cap.blocks_run)

    def _check_spec(self, spec: FeatureSpec) -> None:
        bad = [i for i in spec.layers if not (0 <= i < self.num_layers)]
        if bad:
            raise ValueError(f"layer: {bad} outside 0..{self.num_layers - 1} ({self.name})")
        if spec.heads is not None:
            badh = [h for h in spec.heads if not (0 <= h < self.num_heads)]
            if badh:
                raise ValueError(f"heads: {badh} outside 0..{self.num_heads - 1}")

    def _tokens_to_grid(self, key: str, t: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[1, L, dim] -> [t, dim, h, w]; [1, L, heads, d] -> [t, heads, d, h, w]."""
        tt, hh, ww = grid
        t = t[0, : tt * hh * ww]
        if key.startswith("block"):
            return t.reshape(tt, hh, ww, -1).permute(0, 3, 1, 2).contiguous()
        return t.reshape(tt, hh, ww, t.shape[-2], t.shape[-1]).permute(0, 3, 4, 1, 2).contiguous()

    # ---------------------------------------------------------------- protocol: features
    def features(self, frames: torch.Tensor, noise_level: float, spec: FeatureSpec, seed: int,
                 cond: Any = None, progress: ProgressFn = None) -> dict[str, dict]:
        noise_level = check_noise_level(noise_level)
        self._check_spec(spec)
        frames, x = self._at_model_size(frames)
        (T, H, W), (mh, mw) = frames.shape[:3], x.shape[1:3]
        plan = self.window_plan(T, spec)
        image_cond = cond if isinstance(cond, ImageCond) else None
        text = image_cond.text if image_cond is not None else (cond if isinstance(cond, list) else self.text)
        grid_hw = (mh // self.spatial_stride, mw // self.spatial_stride)

        def one_window(win: windows.Window) -> dict[str, torch.Tensor]:
            x0 = self.encode(windows.pad_frames(x[win.start:win.stop], win.length))
            extra = self._image_extra(image_cond, win.length, (mh, mw), need_image=False)
            raw = self.capture_latent(x0, noise_level, spec, seed, self._conds(text, extra))
            grid = (x0.shape[2],) + grid_hw
            return {key: windows.latent_time_to_frames(self._tokens_to_grid(key, raw[key], grid), win.length,
                                                       self.temporal_compression)
                    for key in spec.keys()}

        out = windows.run_windows(plan, T, one_window, progress,
                                  comfy.model_management.throw_exception_if_processing_interrupted)
        stride = (H / grid_hw[0], W / grid_hw[1])
        used_window = windows.quantize_window(spec.window or self.default_window, self.window_quantum)
        result = {}
        for layer in spec.layers:
            for kind in spec.kinds:
                key = f"{kind}{layer}"
                qk = kind != "block"
                heads = (list(spec.heads) if spec.heads is not None else list(range(self.num_heads))) if qk else None
                meta = make_feature_meta(
                    self.name, kind, family=self.family, layer=layer, heads=heads, noise_level=noise_level,
                    timestep=self.timestep_from_noise_level(noise_level), rope=spec.rope if qk else None,
                    rope_layout=self.rope_layout if qk else None, sigma=self.sigma_at(noise_level),
                    rope_groups=self.rope_groups if qk else None, num_heads=self.num_heads, window=used_window,
                    overlap=spec.overlap, windows=len(plan), seed=int(seed), model_size=(mh, mw))
                result[key] = make_features(out[key], stride, (H, W), meta)
        return result

    # ---------------------------------------------------------------- protocol: regeneration (NativeRegeneration)
    def _regen_inputs(self, x: torch.Tensor, frames: int, positive: ImageCond, negative: ImageCond,
                      mask: Optional[torch.Tensor]):
        """The clip padded to a window length (4k+1), its latent, each prompt's text + first-frame conditioning."""
        mh, mw = x.shape[1:3]
        length = windows.quantize_up(frames, self.temporal_compression)
        x0 = self.encode(windows.pad_frames(x, length))
        pos = self._conds(positive.text, self._image_extra(positive, length, (mh, mw), need_image=True))
        neg = self._conds(negative.text, self._image_extra(negative, length, (mh, mw), need_image=True))
        lat_mask = None if mask is None else self._latent_mask(mask, frames, (mh, mw), x0.shape[2])
        return x0, pos, neg, lat_mask

    def _latent_mask(self, mask: torch.Tensor, frames: int, size: tuple[int, int], latent_frames: int):
        """A video MASK of `frames` frames -> [1,1,t,h,w] on the latent grid (windows.video_mask_to_latent)."""
        return windows.video_mask_to_latent(mask, frames, size, latent_frames, self.temporal_compression,
                                            self.vae_stride)

    def _first_frame_euler(self, x0: torch.Tensor, sigmas: torch.Tensor, positive: list, negative: list,
                           guidance: float, latent_mask: Optional[torch.Tensor], seed: int,
                           progress: ProgressFn) -> torch.Tensor:
        """guided_euler that keeps the positive image's first latent frame (when the conditioning has one) and
        lets each branch see its own first frame; outside `latent_mask` the original latent is kept."""
        start = x0.float().clone()
        keep = torch.ones((1, 1) + tuple(x0.shape[2:]), device=x0.device)
        first = positive[0][1].get(FIRST_LATENT_KEY)
        if first is not None:
            start[:, :, : first.shape[2]] = first.to(start)
            keep[:, :, : first.shape[2]] = 0.0
        mask = keep if latent_mask is None else keep * latent_mask.to(keep)
        m = self.model.clone()
        install_first_frames(m, positive, negative)
        # noise drawn for x0's shape: start has the same shape, the first frame replaced
        return guided_euler(m, start, sigmas, positive, negative, guidance, mask, seed, progress, item_noise=True)
