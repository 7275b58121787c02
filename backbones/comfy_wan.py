"""ComfyUI-native Wan adapter: a loaded MODEL (ModelPatcher) + VAE (+ optional CLIP_VISION_OUTPUT).

Covers what ComfyUI 0.3.75 loads as `model_base.WAN21` / `WAN22` with a `WanModel` DiT: Wan 2.1 T2V and
I2V (CLIP image tokens), Wan 2.2 14B T2V/I2V (I2V = in_dim 36 without CLIP) and Wan 2.2 5B TI2V
(`model_base.WAN22`: 48-channel latent, 16x VAE, so 32 px per token).

Wan 2.2 TI2V conditions on the first frame through the latent itself, as core Wan22ImageToVideoLatent does: the
first latent frame is the VAE latent of the image and a noise mask (0 on that frame) keeps it clean; WAN22 turns
the mask into per-frame timesteps (0 on the known frame). Here the mask travels on each conditioning as
`denoise_mask` (ComfyUI lets a conditioning's own key win over the sampler's, so the timesteps follow the
first-frame rule even when a regeneration mask is used) and the clean first latent of each CFG branch is written
into the DiT input by a DIFFUSION_MODEL wrapper (native_common.install_first_frames, shared with the Cosmos adapter), so the
positive and negative branches see their own first frames. Outside a regeneration mask WAN22's inpainting feeds
the model the clean original latent (WAN22.scale_latent_inpaint), as ComfyUI does for every Wan 2.2 5B mask.

Everything runs through ComfyUI: the model is loaded by the sampler machinery (load_models_gpu via
CFGGuider), patched only on `model.clone()` (capture.py, native_common.py), conditioned with ComfyUI's own keys
(`concat_latent_image`, `concat_mask`, `clip_vision_output`, exactly as core WanImageToVideo sets them) and
sampled with `CFGGuider` + Euler, so LoRAs, model patches and the inpainting `denoise_mask` all apply.

The family-neutral body (VAE, capture, windows, regeneration wrapper) is native_dit.NativeDiTBackbone.
Latents in this adapter are in *model space* (ComfyUI's process_latent_in of the VAE latent), where the
flow-matching formula x = (1-sigma) x0 + sigma eps holds.
"""
from __future__ import annotations

from typing import Optional

import torch

import comfy.model_base
import comfy.model_management

from . import schedules
from .native_common import FIRST_LATENT_KEY, first_frame, guided_euler, sdedit_sigmas
from .native_dit import NativeDiTBackbone
from .protocol import ImageCond, ProgressFn, check_noise_level

WAN_TEXT_LEN = 512
CLIP_TOKENS, CLIP_DIM = 257, 1280


class _ZeroClipVision:
    """Stands in for a CLIP_VISION_OUTPUT (all-zero image tokens) when an I2V model with CLIP gets none."""

    def __init__(self, device=None):
        self.penultimate_hidden_states = torch.zeros(1, CLIP_TOKENS, CLIP_DIM, device=device)


def is_wan_model(model) -> bool:
    from comfy.ldm.wan.model import WanModel

    base = getattr(model, "model", None)
    return isinstance(base, comfy.model_base.WAN21) and isinstance(getattr(base, "diffusion_model", None), WanModel)


class ComfyWanBackbone(NativeDiTBackbone):
    family = "wan"
    rope_layout = "interleaved"     # ComfyUI apply_rope1: channel pairs (2i, 2i+1) share a frequency
    default_window = 81          # Wan's native clip length (4k+1)
    _expected_model = "a Wan model (WanModel DiT)"
    _needed_vae = "the model needs a {c}-channel Wan VAE"
    _is_model = staticmethod(is_wan_model)
    _regen_scheduler = "simple"
    _empty_text_len = WAN_TEXT_LEN
    _text_encoder = "the umT5 text encoder for Wan"

    def _read_dit(self, base, dm) -> None:
        self.head_dim = int(dm.dim // dm.num_heads)
        self.in_channels = int(dm.in_dim)
        self.image_input = self.in_channels > self.latent_channels           # concat image conditioning
        self.ti2v = isinstance(base, comfy.model_base.WAN22)                 # first frame in the latent (5B)
        self.uses_clip = getattr(dm, "img_emb", None) is not None
        self.text_dim = int(dm.text_dim)
        self.rope_groups = tuple(int(a) for a in dm.rope_embedder.axes_dim)

    @staticmethod
    def _dit_patch(dm) -> int:
        return int(dm.patch_size[1])

    def _read_sampling(self) -> None:
        self.shift = float(getattr(self.model_sampling, "shift", 1.0))

    def _dit_name(self, base, dm) -> str:
        return f"wan:{type(base.model_config).__name__}:{self.num_layers}x{dm.dim}"

    # ---------------------------------------------------------------- schedule
    def sigma_at(self, noise_level: float) -> float:
        return schedules.flow_sigma(check_noise_level(noise_level), self.shift)

    def timestep_from_noise_level(self, noise_level: float) -> float:
        return 1000.0 * self.sigma_at(noise_level)

    def noise_level_from_timestep(self, t: float) -> float:
        if not (0.0 <= float(t) <= 1000.0):
            raise ValueError(f"timestep: {t} must be in [0, 1000]")
        return schedules.flow_noise_level(float(t) / 1000.0, self.shift)

    def noise_to(self, latents: torch.Tensor, noise_level: float, seed: int) -> torch.Tensor:
        s = self.sigma_at(noise_level)
        eps = schedules.seeded_noise(latents.shape, seed, latents.device, latents.dtype)
        return schedules.flow_noise(latents, eps, s)

    # ---------------------------------------------------------------- conditioning
    def _image_extra(self, cond: Optional[ImageCond], length: int, size: tuple[int, int],
                     need_image: bool) -> dict:
        """What core WanImageToVideo puts on the conditioning: VAE latent of [image, grey...] + known-frame mask."""
        if self.ti2v:
            return self._ti2v_extra(cond, length, size, need_image)
        if not self.image_input:
            if need_image:
                raise ValueError("model: this Wan model is text-to-video; image-conditioned regeneration needs "
                                 "an image-to-video Wan (Wan 2.1 I2V or Wan 2.2 I2V)")
            return {}
        extra: dict = {}
        dev = comfy.model_management.intermediate_device()
        if cond is not None and cond.image is not None:
            img = first_frame(cond.image, size)
            video = torch.full((length, size[0], size[1], 3), 0.5, dtype=img.dtype, device=img.device)
            video[:1] = img
            concat = self.vae.encode(video)
            mask = torch.ones((1, 1, concat.shape[2], concat.shape[-2], concat.shape[-1]), device=concat.device)
            mask[:, :, :1] = 0.0
            extra.update(concat_latent_image=concat, concat_mask=mask)
        elif need_image:
            raise ValueError("image: an image-to-video regeneration needs a first-frame image")
        cvo = cond.clip_vision_output if cond is not None else None
        if self.uses_clip:
            if cvo is None and need_image:
                raise ValueError("clip_vision: this Wan I2V model uses CLIP image tokens; connect a CLIP_VISION "
                                 "model (clip_vision_h) so both first frames can be encoded")
            extra["clip_vision_output"] = cvo if cvo is not None else _ZeroClipVision(dev)
        return extra

    def _ti2v_extra(self, cond: Optional[ImageCond], length: int, size: tuple[int, int], need_image: bool) -> dict:
        """Wan 2.2 TI2V (Wan22ImageToVideoLatent): the model-space latent of the image is latent frame 0 (written
        per branch by install_first_frames) and `denoise_mask` (0 on that frame) gives it timestep 0."""
        if cond is None or cond.image is None:
            if need_image:
                raise ValueError("image: a Wan 2.2 TI2V regeneration needs a first-frame image")
            return {}
        return self._first_latent_extra(cond.image, length, size, "denoise_mask")

    def regenerate_latent(self, x0: torch.Tensor, noise_level: float, positive: list, negative: list,
                          guidance: float, steps: int, latent_mask: Optional[torch.Tensor] = None,
                          seed: int = 0, progress: ProgressFn = None) -> torch.Tensor:
        """SDEdit on a model-space latent with CONDITIONING lists. Per step v = v_pos + w (v_pos - v_neg):
        ComfyUI's CFG neg + cfg (pos - neg) with cfg = 1 + w (w = 0 runs the positive branch only).
        latent_mask [1,1,t,h,w], 1 = regenerate: outside it ComfyUI's inpainting keeps the noised original at
        each step (the clean original for Wan 2.2 TI2V, WAN22's rule) and the original latent at the end.
        Wan 2.2 TI2V: the known first latent frame is kept (set to the positive image's latent) and each branch
        sees its own first frame."""
        sigmas = sdedit_sigmas(self, self._regen_scheduler, noise_level, steps, guidance)
        if len(sigmas) < 2:
            return x0.clone()
        if not self.ti2v or positive[0][1].get(FIRST_LATENT_KEY) is None:
            return guided_euler(self.model.clone(), x0, sigmas, positive, negative, guidance, latent_mask, seed,
                                progress, item_noise=True)
        return self._first_frame_euler(x0, sigmas, positive, negative, guidance, latent_mask, seed, progress)
