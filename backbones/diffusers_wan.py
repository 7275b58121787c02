"""Wan 2.1/2.2 through diffusers (WanTransformer3DModel + AutoencoderKLWan), mainly to prove that the
ComfyUI-native adapter (comfy_wan.py) computes the same thing on the same weights file.

Loading: a diffusers folder (transformer/, vae/) or a single file in ComfyUI's/original key layout via
WanTransformer3DModel.from_single_file(file, config=<shipped dir>, local_files_only=True), with the VAE as a
single file + the shipped vae config. Schedule: flow matching with ComfyUI's Wan shift (8.0 by default),
sigma = flow_sigma(noise_level, shift), t = 1000*sigma. Conditioning mirrors ComfyUI's WAN21.concat_cond:
channels = [4-channel "unknown" mask (1 - known), image latent] with the image latent of
[first frame, grey...] (core WanImageToVideo), all-zero 512-token text context for the empty prompt.
q/k are what the attention kernel receives (after QK-norm, after RoPE) or, with rope="before", the
QK-norm outputs: forward hooks on the self-attention's own norm_q / norm_k (RoPE applied with diffusers'
apply_rotary_emb); nothing outside the adapter's modules is touched.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from .diffusers_common import (Capture, DiffusersBackbone, cond_image, from_pixels, load_denoiser, load_from_folder,
                               masked_guided_euler, shipped_config_dir, to_pixels)
from .diffusers_files import check_single_file
from .protocol import check_noise_level
from .schedules import flow_noise_level, flow_noise, flow_sigma, sdedit_tail, seeded_noise
from .windows import pad_frames, quantize_up, video_mask_to_latent

WAN_TEXT_LEN = 512


class _QKCapture:
    """Per-head q/k of blocks[i].attn1 (the self-attention) through forward hooks on that module's own QK-norms
    (adapter-owned modules, removed with the Capture): [B, L, heads, head_dim] after QK-norm, and with
    rope="after" rotated by the rotary table attn1 receives, with diffusers' apply_rotary_emb (Wan's interleaved
    pairs, use_real_unbind_dim=-1), i.e. exactly what WanAttnProcessor hands the attention kernel."""

    def __init__(self, cap: Capture, attn, layer: int, kinds, rope: str, heads: int):
        self.cap, self.layer, self.rope, self.heads = cap, layer, rope, heads
        self.rotary = None
        cap.handles.append(attn.register_forward_pre_hook(self._see_rotary, with_kwargs=True))
        for kind in kinds:
            norm = attn.norm_q if kind == "q" else attn.norm_k
            cap.handles.append(norm.register_forward_hook(self._take(kind)))

    def _see_rotary(self, module, args, kwargs):
        self.rotary = kwargs.get("rotary_emb", args[3] if len(args) > 3 else None)

    def _take(self, kind: str):
        def hook(module, args, out):
            t = out.unflatten(-1, (self.heads, -1))                     # [B, L, heads, head_dim]
            if self.rope == "after" and self.rotary is not None:
                from diffusers.models.embeddings import apply_rotary_emb

                cos, sin = (f.reshape(f.shape[-3], f.shape[-1]) for f in self.rotary)   # [1,L,1,d] -> [L,d]
                t = apply_rotary_emb(t, (cos, sin), use_real=True, use_real_unbind_dim=-1, sequence_dim=1)
            self.cap.put(f"{kind}{self.layer}", t)
        return hook


class DiffusersWanBackbone(DiffusersBackbone):
    family = "wan"
    rope_layout = "interleaved"     # diffusers Wan rotary: pairs (2i, 2i+1) share a frequency
    temporal_compression = 4
    window_quantum = 4
    default_window = 81
    paper_layer = 18              # HeFT's layer for Wan2.1-1.3B, as the native adapter
    latent_frames_per_video_frame_causal = True

    def __init__(self, transformer, vae, source: str = "", shift: float = 8.0, **kw):
        super().__init__(source, **kw)
        self.transformer, self.vae = transformer, vae
        c = transformer.config
        self.shift = float(shift)
        self.num_layers = c.num_layers
        self.num_heads, self.head_dim = c.num_attention_heads, c.attention_head_dim
        self.latent_channels = c.out_channels
        self.image_input = c.in_channels > c.out_channels
        self.image_prompt = self.image_input
        self.vae_stride = int(vae.config.scale_factor_spatial)          # pixels per latent cell
        self.spatial_stride = self.vae_stride * c.patch_size[1]
        self.pixel_multiple = self.spatial_stride
        m = vae.config
        self.latents_mean = torch.tensor(m.latents_mean).view(1, -1, 1, 1, 1)
        self.latents_std = torch.tensor(m.latents_std).view(1, -1, 1, 1, 1)

    @classmethod
    def load(cls, source: str, dtype=torch.float32, vae_file: str = "", config_dir: str = "", **kw):
        from diffusers import AutoencoderKLWan, WanTransformer3DModel

        if os.path.isfile(source):
            check_single_file(None, source, dtype)          # header complete, memory bounded (any key layout)
            tr = WanTransformer3DModel.from_single_file(source, config=config_dir or shipped_config_dir("wan"),
                                                        local_files_only=True, torch_dtype=dtype).eval()
        else:
            tr = load_denoiser(WanTransformer3DModel, source, "transformer", "wan", dtype)
        vae_dir = os.path.join(source, "vae") if os.path.isdir(source) else ""
        if vae_dir and os.path.isdir(vae_dir):
            vae = load_from_folder(AutoencoderKLWan, vae_dir, dtype)
        elif vae_file:
            check_single_file(None, vae_file, dtype)
            vae = AutoencoderKLWan.from_single_file(vae_file, config=kw.pop("vae_config_dir", "")
                                                    or shipped_config_dir("wan", "vae"),
                                                    local_files_only=True, torch_dtype=dtype).eval()
        else:
            raise ValueError("vae: a Wan single file needs a Wan VAE file")
        kw.pop("vae_config_dir", None)
        return cls(tr, vae, source=source, dtype=dtype, **kw)

    def _modules(self):
        return [self.transformer, self.vae]

    # ---- schedule (ComfyUI's Wan flow matching)
    def sigma_at(self, noise_level):
        return flow_sigma(check_noise_level(noise_level), self.shift)

    def timestep_from_noise_level(self, noise_level):
        return 1000.0 * self.sigma_at(noise_level)

    def noise_level_from_timestep(self, t):
        if not (0.0 <= float(t) <= 1000.0):
            raise ValueError(f"timestep: {t} must be in [0, 1000]")
        return flow_noise_level(float(t) / 1000.0, self.shift)

    def noise_to(self, latents, noise_level, seed):
        eps = seeded_noise(latents.shape, seed, latents.device, latents.dtype)
        return flow_noise(latents, eps, self.sigma_at(noise_level))

    # ---- VAE: model-space latents [1,16,t,h,w] = (z - mean) / std (ComfyUI's Wan21 latent format)
    @torch.no_grad()
    def _encode_pixels(self, x):
        z = self.vae.encode(x.permute(1, 0, 2, 3).unsqueeze(0).to(self.device, self.dtype)).latent_dist.mode()
        return (z.float() - self.latents_mean.to(z.device)) / self.latents_std.to(z.device)


    @torch.no_grad()
    def _decode_pixels(self, latents):
        z = latents.float() * self.latents_std.to(latents.device) + self.latents_mean.to(latents.device)
        return self.vae.decode(z.to(self.device, self.dtype)).sample[0].permute(1, 0, 2, 3).float()


    # ---- conditioning
    def image_concat(self, image: Optional[torch.Tensor], length: int, size) -> Optional[torch.Tensor]:
        """[mask(4) | image latent(16)] as WAN21.concat_cond builds it from WanImageToVideo's conds."""
        if not self.image_input:
            return None
        if image is None:
            raise ValueError("image: this Wan model is image-to-video; give a first-frame image")
        video = torch.full((length, size[0], size[1], 3), 0.5, device=self.device)
        video[:1] = cond_image(image, size).to(self.device)
        lat = self._encode_pixels(to_pixels(video, self.pixel_multiple))
        known = torch.zeros(1, 4, lat.shape[2], lat.shape[3], lat.shape[4], device=lat.device)
        known[:, :, 0] = 1.0
        return torch.cat([known, lat], 1)       # ComfyUI: mask = 1 - concat_mask = 1 on the known frame

    def velocity(self, x, sigma: float, y: Optional[torch.Tensor], text: Optional[torch.Tensor] = None):
        text = text if text is not None else torch.zeros(1, WAN_TEXT_LEN, self.transformer.config.text_dim,
                                                         device=self.device, dtype=self.dtype)
        inp = torch.cat([x, y], 1) if y is not None else x
        t = torch.full((x.shape[0],), sigma * 1000.0, device=self.device)
        return self.transformer(inp.to(self.dtype), t, text.to(self.dtype), return_dict=False)[0].float()

    # ---- features: one conditional forward pass on a model-space latent
    @torch.no_grad()
    def capture_latent(self, x0, noise_level, spec, seed, y=None, text=None) -> dict:
        noisy = self.noise_to(x0, noise_level, seed)
        sigma = self.sigma_at(noise_level)
        with Capture(spec.keys()) as cap:
            for i in spec.layers:
                blk = self.transformer.blocks[i]
                if "block" in spec.kinds:
                    cap.on_output(blk, f"block{i}")
                qk = [k for k in ("q", "k") if k in spec.kinds]
                if qk:
                    _QKCapture(cap, blk.attn1, i, qk, spec.rope, self.num_heads)
            got = cap.run(lambda: self.velocity(noisy, sigma, y, text))
        if spec.heads is not None:
            got = {k: (v if k.startswith("block") else v[:, :, spec.heads]) for k, v in got.items()}
        return got

    def _window_features(self, frames, noise_level, spec, seed, cond):
        px = to_pixels(frames, self.pixel_multiple)
        x0 = self._encode_pixels(px)
        y = self.image_concat(cond, frames.shape[0], px.shape[-2:]) if cond is not None else \
            (torch.zeros((1, 20) + tuple(x0.shape[2:]), device=x0.device) if self.image_input else None)
        capture = self.capture_latent(x0, noise_level, spec, seed, y)
        t, h, w = x0.shape[2], x0.shape[3] // 2, x0.shape[4] // 2
        out = {}
        for k, v in capture.items():
            v = v[0, : t * h * w].float()
            if k.startswith("block"):
                out[k] = v.reshape(t, h, w, -1).permute(0, 3, 1, 2)
            else:
                out[k] = v.reshape(t, h, w, v.shape[-2], v.shape[-1]).permute(0, 3, 4, 1, 2)
        return out

    # ---- guided SDEdit: Euler on ComfyUI's "simple" flow schedule tail (sigmas given or computed)
    @torch.no_grad()
    def regenerate_latent(self, x0, noise_level, y_pos, y_neg, guidance, sigmas, latent_mask=None, seed=0,
                          progress=None):
        noise = seeded_noise(x0.shape, seed, x0.device)
        conds = {"pos": y_pos, "neg": y_neg}
        return masked_guided_euler(x0, noise, sigmas, lambda x, s, b: x - s * self.velocity(x, s, conds[b]),
                                   flow_noise, guidance, latent_mask, progress)

    def simple_sigmas(self, steps: int) -> torch.Tensor:
        """ComfyUI's "simple" scheduler on Wan's discrete flow sigmas (1000 levels, shifted), + final 0."""
        ts = torch.arange(1, 1001, dtype=torch.float64) / 1000.0
        table = self.shift * ts / (1 + (self.shift - 1) * ts)
        stride = len(table) / steps
        s = [float(table[-(1 + int(i * stride))]) for i in range(steps)] + [0.0]
        return torch.tensor(s, dtype=torch.float32)

    def _regenerate(self, frames, noise_level, positive, negative, guidance, steps, mask, seed, progress):
        T, H, W, _ = frames.shape
        length = quantize_up(T, self.temporal_compression)
        px = to_pixels(pad_frames(frames, length), self.pixel_multiple)
        x0 = self._encode_pixels(px)
        size = tuple(px.shape[-2:])
        y_pos = self.image_concat(positive, length, size)
        y_neg = self.image_concat(negative if negative is not None else positive, length, size)
        lm = None
        if mask is not None:
            lm = video_mask_to_latent(mask, T, size, x0.shape[2], self.temporal_compression,
                                      self.vae_stride).to(self.device)
        sig = sdedit_tail(self.simple_sigmas(int(steps)), noise_level, self.sigma_at(noise_level))
        out = x0 if len(sig) < 2 else self.regenerate_latent(x0, noise_level, y_pos, y_neg, float(guidance), sig,
                                                             lm, seed, progress)
        x = self._decode_pixels(out)[:T]
        return from_pixels(x, (H, W))
