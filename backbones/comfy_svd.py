"""ComfyUI-native Stable Video Diffusion adapter: MODEL + VAE (+ CLIP_VISION_OUTPUT) as loaded by
ImageOnlyCheckpointLoader (`model_base.SVD_img2vid`, EDM v-prediction, a VideoUNet).

Features (Track4Gen): "block{i}" = output of decoder up block i in diffusers numbering. ComfyUI's UNet keeps
the decoder as a flat `output_blocks` list of (num_res_blocks + 1) modules per level; the last module of a
level ends with its Upsample, so diffusers up_blocks[i] (with upsamplers[0] for i < last) ends at
output_blocks[(nrb+1)*i + nrb]; for SVD (nrb 2): up_blocks[2].upsamplers[0] = output_blocks[8] (stride 8 px).
Capture: ComfyUI's `output_block_patch` (set_model_output_block_patch on model.clone()) is called before
output block j with h = the output of block j-1, so block (nrb+1)*i + nrb is read at the patch call of the
next block; StopForward is raised there after the deepest requested layer (the rest of the decoder is
skipped). The last up block (its output only feeds the final norm/conv) has no such call and is not offered.
Noise: EDM, sigma log-linear in noise_level between the model's sigma_min and sigma_max (percent_to_sigma),
x = x0 + sigma*eps in model space (process_latent_in of the VAE latent); timestep = 0.25 ln sigma (what the
UNet's time embedding receives; same convention as diffusers_svd).
Conditioning as core SVD_img2vid_Conditioning: CLIP image embedding of the image as the context (zeros
without a CLIP vision output: the unconditional embedding, features only), the raw VAE latent of the image
as `concat_latent_image` on every frame, fps 6, motion_bucket_id 127, augmentation_level 0.
Latents are [T, 4, h, w] (frames on the batch axis). Windows: 14 frames (SVD), any overlap.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch

import comfy.model_base
import comfy.model_management

from . import schedules, windows
from .capture import StopForward
from .native_common import (NativeRegeneration, captured_forward, first_frame, guided_euler, require_model,
                            require_vae, sdedit_sigmas)
from ..kernels.datatypes import make_feature_meta, make_features
from .protocol import BackboneBase, FeatureSpec, ImageCond, ProgressFn, check_noise_level

SVD_DEFAULTS = {"fps": 6, "motion_bucket_id": 127, "augmentation_level": 0.0}


def is_svd_model(model) -> bool:
    return isinstance(getattr(model, "model", None), comfy.model_base.SVD_img2vid)


class UpBlockCapture:
    """output_block_patch that records the outputs of diffusers up_blocks[i] (read-only) and stops early."""

    def __init__(self, ends: dict[int, int], stop_early: bool = True, to_device=None):
        self.ends = ends                       # layer -> index of its last output block
        self.by_next = {end + 1: layer for layer, end in ends.items()}
        self.deepest_next = max(self.by_next)
        self.stop_early = stop_early
        self.to_device = to_device
        self.store: dict[str, torch.Tensor] = {}
        self.blocks_run: list[int] = []

    def install(self, patcher) -> None:
        patcher.set_model_output_block_patch(self.patch)

    def patch(self, h, hsp, transformer_options):
        kind, j = transformer_options.get("block", (None, None))
        if kind == "output":
            self.blocks_run.append(j)
            layer = self.by_next.get(j)
            if layer is not None:
                t = h.detach().float()
                self.store[f"block{layer}"] = t.to(self.to_device) if self.to_device is not None else t
                if self.stop_early and j == self.deepest_next:
                    raise StopForward()
        return h, hsp


class ComfySVDBackbone(NativeRegeneration, BackboneBase):
    family = "svd"
    temporal_compression = 1
    window_quantum = 1
    default_window = 14
    paper_layer = 2              # Track4Gen reads diffusers up_blocks[2] (stride 8 px)
    num_heads = 0
    head_dim = 0

    def __init__(self, model, vae, text: Any = None):
        require_model(is_svd_model(model), model, "a Stable Video Diffusion model (SVD_img2vid)")
        self.model = model
        self.vae = vae
        base = model.model
        dm = base.diffusion_model
        self.nrb = int(dm.num_res_blocks[0]) if isinstance(dm.num_res_blocks, (list, tuple)) else int(dm.num_res_blocks)
        self.levels = len(dm.output_blocks) // (self.nrb + 1)
        self.num_layers = self.levels - 1                   # up blocks whose output a patch call sees
        self.latent_channels = int(base.latent_format.latent_channels)
        require_vae(vae, self.latent_channels, f"SVD needs a {self.latent_channels}-channel image VAE")
        self.context_dim = int(base.model_config.unet_config.get("context_dim", 1024))
        self.vae_stride = 8
        self.pixel_multiple = self.vae_stride * 2 ** (self.levels - 1)
        self.spatial_stride = self.layer_stride(2 if self.num_layers > 2 else self.num_layers - 1)
        self.model_sampling = model.get_model_object("model_sampling")
        self.sigma_min = float(self.model_sampling.sigma_min)
        self.sigma_max = float(self.model_sampling.sigma_max)
        self.name = f"svd:{type(base.model_config).__name__}:{dm.model_channels}"
        self.last_blocks_run: list[int] = []

    def output_block_of(self, layer: int) -> int:
        """ComfyUI output_blocks index that ends diffusers up_blocks[layer] (its upsampler for layer < last)."""
        return (self.nrb + 1) * layer + self.nrb

    def layer_stride(self, layer: int) -> int:
        return self.pixel_multiple // 2 ** (layer + 1)

    # ---------------------------------------------------------------- schedule
    def sigma_at(self, noise_level: float) -> float:
        return schedules.edm_sigma(check_noise_level(noise_level), self.sigma_min, self.sigma_max)

    def timestep_from_noise_level(self, noise_level: float) -> float:
        s = self.sigma_at(noise_level)
        return 0.25 * math.log(max(s, 1e-12))

    def noise_level_from_timestep(self, t: float) -> float:
        return schedules.edm_noise_level(math.exp(4.0 * float(t)), self.sigma_min, self.sigma_max)

    def noise_to(self, latents: torch.Tensor, noise_level: float, seed: int) -> torch.Tensor:
        eps = schedules.seeded_noise(latents.shape, seed, latents.device, latents.dtype)
        return schedules.edm_noise(latents, eps, self.sigma_at(noise_level))

    # ---------------------------------------------------------------- VAE
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """[T,H,W,3] 0..1 -> model-space latent [T,4,h,w]."""
        return self.model.model.process_latent_in(self.vae.encode(frames[..., :3]).float())

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        img = self.vae.decode(self.model.model.process_latent_out(latents.float()))
        return img.reshape(-1, *img.shape[-3:]).float()

    # ---------------------------------------------------------------- conditioning
    def _conds(self, cond: ImageCond, size: tuple[int, int], need_clip: bool) -> list:
        """What core SVD_img2vid_Conditioning builds for one init image."""
        img = first_frame(cond.image, size)
        cvo = cond.clip_vision_output
        if cvo is None:
            if need_clip:
                raise ValueError("clip_vision: SVD regeneration needs a CLIP_VISION model (the one in the SVD "
                                 "checkpoint, from Image Only Checkpoint Loader) to encode both first frames")
            pooled = torch.zeros(1, 1, self.context_dim)
        else:
            pooled = cvo.image_embeds.unsqueeze(0).float()
            if pooled.shape[-1] != self.context_dim:
                raise ValueError(f"clip_vision: image embeddings are {pooled.shape[-1]}-wide, the model expects "
                                 f"{self.context_dim} (use the CLIP vision model of the SVD checkpoint)")
        return [[pooled, {**SVD_DEFAULTS, "concat_latent_image": self.vae.encode(img)}]]

    # ---------------------------------------------------------------- features
    def _check_spec(self, spec: FeatureSpec) -> None:
        if any(k != "block" for k in spec.kinds):
            raise ValueError("kind: SVD offers 'block' features only (UNet up-block outputs)")
        bad = [i for i in spec.layers if not (0 <= i < self.num_layers)]
        if bad:
            raise ValueError(f"layer: {bad} outside 0..{self.num_layers - 1} (SVD up blocks; Track4Gen uses 2)")

    def capture_latent(self, x0: torch.Tensor, noise_level: float, spec: FeatureSpec, seed: int, conds: list,
                       stop_early: bool = True) -> dict[str, torch.Tensor]:
        self._check_spec(spec)
        if check_noise_level(noise_level) == 0.0:
            raise ValueError("noise_level: SVD (EDM) needs a noise_level > 0 (sigma 0 has no timestep)")
        cap = UpBlockCapture({i: self.output_block_of(i) for i in spec.layers}, stop_early,
                             comfy.model_management.intermediate_device())
        try:
            return captured_forward(self.model.clone(), cap, x0, self.sigma_at(noise_level), spec, seed, conds)
        finally:
            self.last_blocks_run = list(cap.blocks_run)

    def features(self, frames: torch.Tensor, noise_level: float, spec: FeatureSpec, seed: int,
                 cond: Any = None, progress: ProgressFn = None) -> dict[str, dict]:
        noise_level = check_noise_level(noise_level)
        self._check_spec(spec)
        frames, x = self._at_model_size(frames)
        (T, H, W), (mh, mw) = frames.shape[:3], x.shape[1:3]
        plan = self.window_plan(T, spec)
        image_cond = cond if isinstance(cond, ImageCond) else None

        def one_window(win: windows.Window) -> dict[str, torch.Tensor]:
            clip = windows.pad_frames(x[win.start:win.stop], win.length)
            first = ImageCond(clip[:1]) if image_cond is None else image_cond   # default: the window's 1st frame
            return self.capture_latent(self.encode(clip), noise_level, spec, seed, self._conds(first, (mh, mw), False))

        out = windows.run_windows(plan, T, one_window, progress,
                                  comfy.model_management.throw_exception_if_processing_interrupted)
        window = spec.window or self.default_window
        result = {}
        for layer in spec.layers:
            key = f"block{layer}"
            f = out[key]
            meta = make_feature_meta(
                self.name, "block", family=self.family, layer=layer, noise_level=noise_level,
                timestep=self.timestep_from_noise_level(noise_level), output_block=self.output_block_of(layer),
                sigma=self.sigma_at(noise_level), rope_groups=None, num_heads=0,
                window=windows.quantize_window(window, 1),
                overlap=spec.overlap, windows=len(plan), seed=int(seed), model_size=(mh, mw))
            result[key] = make_features(f, (H / f.shape[-2], W / f.shape[-1]), (H, W), meta)
        return result

    # ---------------------------------------------------------------- regeneration (NativeRegeneration)
    def _regen_inputs(self, x: torch.Tensor, frames: int, positive: ImageCond, negative: ImageCond,
                      mask: Optional[torch.Tensor]):
        """One latent per frame, each prompt's image conditioning, the mask pooled per frame ([T,1,h,w])."""
        size = tuple(x.shape[1:3])
        x0 = self.encode(x)
        pos = self._conds(positive, size, True)
        neg = self._conds(negative, size, True)
        lat_mask = None
        if mask is not None:
            lat_mask = windows.video_mask_to_latent(mask, frames, size, frames, 1, self.vae_stride,
                                                    causal_first=False)[0, 0][:, None]
        return x0, pos, neg, lat_mask

    def regenerate_latent(self, x0: torch.Tensor, noise_level: float, positive: list, negative: list, guidance: float,
                          steps: int, latent_mask: Optional[torch.Tensor] = None, seed: int = 0,
                          progress: ProgressFn = None) -> torch.Tensor:
        """SDEdit with Euler on the tail of SVD's Karras schedule from sigma(noise_level); per step
        den = den_pos + w (den_pos - den_neg) (ComfyUI CFG, cfg = 1 + w). latent_mask [T,1,h,w], 1 = regenerate:
        outside it ComfyUI's inpainting keeps the noised original each step and the original at the end."""
        sigmas = sdedit_sigmas(self, "karras", noise_level, steps, guidance)
        if len(sigmas) < 2:
            return x0.clone()
        return guided_euler(self.model.clone(), x0, sigmas, positive, negative, guidance, latent_mask, seed, progress)
