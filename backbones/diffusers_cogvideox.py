"""CogVideoX (diffusers CogVideoXTransformer3DModel, text-to-video 2B/5B) behind the backbone protocol.

DiffTrack's descriptors: per-head queries/keys of the full 3D self-attention of block l (default 17)
after QK-LayerNorm and after 3D RoPE (RoPE only where the model uses it: 5B; 2B has absolute sin/cos
embeddings, so "before" == "after"), text tokens stripped; also the block's video-token output.
frame_as_latent (default True, DiffTrack): every RGB frame is VAE-encoded as its own one-frame latent, so
one latent frame per video frame and windows of 13 frames (DiffTrack's chunk). Otherwise the causal VAE
compresses 4x in time (windows of 4k+1 frames, default 49) and features are interpolated back to frames.
Noise: the model's DDPM schedule (CogVideoXDDIM: scaled_linear, SNR shift, zero terminal SNR), t from noise_level;
add_noise=False feeds the clean latent at that timestep (DiffTrack's default). Empty prompt through the
folder's T5 encoder; zeros of [max_text_seq_length, text_embed_dim] without one.
Unsupported (ValueError): CogVideoX 1.5 (patch_size_t) and image-to-video transformers.
"""
from __future__ import annotations

import torch

from .diffusers_common import (Capture, DiffusersBackbone, RestoreProcessor, ddpm_alphas_cumprod, from_pixels, latent_mask,
                               load_denoiser, load_vae, scheduler_config, to_pixels,
                               vpred_ddim_sdedit)
from .protocol import check_noise_level
from .schedules import ddpm_noise_level, ddpm_noise, ddpm_timestep, seeded_noise


class _QKRecorder:
    """Wraps a CogVideoX attention processor: records the video tokens' per-head q/k, then runs it."""

    def __init__(self, inner, cap: Capture, layer: int, kinds, rope: str):
        self.inner, self.cap, self.layer, self.kinds, self.rope = inner, cap, layer, kinds, rope

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None,
                 **kw):
        n_text = encoder_hidden_states.size(1)
        joint = torch.cat([encoder_hidden_states, hidden_states], 1)
        B = joint.shape[0]
        for kind in ("q", "k"):
            if kind not in self.kinds:
                continue
            proj, norm = (attn.to_q, attn.norm_q) if kind == "q" else (attn.to_k, attn.norm_k)
            x = proj(joint)
            x = x.view(B, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)   # [B, heads, L, hd]
            if norm is not None:
                x = norm(x)
            x = x[:, :, n_text:]
            if self.rope == "after" and image_rotary_emb is not None:
                from diffusers.models.embeddings import apply_rotary_emb

                x = apply_rotary_emb(x, image_rotary_emb)
            self.cap.put(f"{kind}{self.layer}", x)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb, **kw)


class CogVideoXBackbone(DiffusersBackbone):
    family = "cogvideox"
    rope_layout = "interleaved"     # diffusers apply_rotary_emb (use_real_unbind_dim=-1): pairs (2i, 2i+1)
    latent_frames_per_video_frame_causal = True
    pixel_multiple = 16
    paper_layer = 17              # DiffTrack (CogVideoX-2B)
    image_prompt = False          # text-to-video: regenerate() uses the prompts' text only

    def __init__(self, transformer, vae, scheduler_cfg: dict, source: str = "", frame_as_latent: bool = True,
                 add_noise: bool = True, **kw):
        super().__init__(source, **kw)
        from diffusers import CogVideoXDDIMScheduler

        c = transformer.config
        if c.patch_size_t is not None:
            raise ValueError("model: CogVideoX 1.5 (patch_size_t) is not supported; use CogVideoX 2B/5B")
        if c.in_channels != c.out_channels:
            raise ValueError("model: image-to-video CogVideoX is not supported; use the text-to-video model")
        self.transformer, self.vae = transformer, vae
        self.alphas_cumprod = ddpm_alphas_cumprod(CogVideoXDDIMScheduler, scheduler_cfg)
        self.frame_as_latent, self.add_noise = bool(frame_as_latent), bool(add_noise)
        self.temporal_compression = 1 if frame_as_latent else int(vae.config.temporal_compression_ratio)
        self.window_quantum = self.temporal_compression
        self.default_window = 13 if frame_as_latent else 49
        self.num_layers = c.num_layers
        self.num_heads, self.head_dim = c.num_attention_heads, c.attention_head_dim
        self.spatial_stride = 8 * c.patch_size
        self.pixel_multiple = self.spatial_stride
        self.vae_scale = float(vae.config.scaling_factor)

    @classmethod
    def load(cls, source: str, dtype=torch.float32, vae_file: str = "", **kw) -> "CogVideoXBackbone":
        from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel

        tr = load_denoiser(CogVideoXTransformer3DModel, source, "transformer", "cogvideox", dtype)
        vae = load_vae(AutoencoderKLCogVideoX, source, vae_file, "cogvideox", dtype)
        return cls(tr, vae, scheduler_config(source, "cogvideox"), source=source, dtype=dtype, **kw)

    def _modules(self):
        return [self.transformer, self.vae]

    # ---- schedule
    def timestep_from_noise_level(self, noise_level):
        return float(ddpm_timestep(noise_level, len(self.alphas_cumprod)))

    def noise_level_from_timestep(self, t):
        return ddpm_noise_level(t, len(self.alphas_cumprod))

    def noise_to(self, latents, noise_level, seed):
        t = ddpm_timestep(check_noise_level(noise_level), len(self.alphas_cumprod))
        eps = seeded_noise(latents.shape, seed, latents.device, latents.dtype)
        return ddpm_noise(latents, eps, float(self.alphas_cumprod[t]))

    # ---- VAE: latents [1, F, C, h, w] (the transformer's layout), scaled
    @torch.no_grad()
    def _encode_pixels(self, x):
        x = x.to(self.device, self.dtype)
        if self.frame_as_latent:      # each frame its own one-frame video
            z = torch.cat([self.vae.encode(c.unsqueeze(2)).latent_dist.mode() for c in x.split(8)])  # [T,C,1,h,w]
            z = z[:, :, 0].unsqueeze(0)
        else:
            if (x.shape[0] - 1) % self.temporal_compression:
                raise ValueError(f"image: {x.shape[0]} frames; CogVideoX's VAE needs 4k+1 frames")
            z = self.vae.encode(x.permute(1, 0, 2, 3).unsqueeze(0)).latent_dist.mode().permute(0, 2, 1, 3, 4)
        return (z * self.vae_scale).float()


    @torch.no_grad()
    def _decode_pixels(self, latents):
        z = (latents / self.vae_scale).to(self.device, self.dtype)
        if self.frame_as_latent:
            return torch.cat([self.vae.decode(f.unsqueeze(0).unsqueeze(2)).sample[:, :, 0].float()
                              for f in z[0]])
        return self.vae.decode(z.permute(0, 2, 1, 3, 4)).sample[0].permute(1, 0, 2, 3).float()


    # ---- transformer call
    def _prompt(self, text):
        c = self.transformer.config
        return self.prompt_embeddings(_text_of(text), c.max_text_seq_length,
                                      (c.max_text_seq_length, c.text_embed_dim))

    def _rope(self, frames: int, h: int, w: int):
        c = self.transformer.config
        if not c.use_rotary_positional_embeddings:
            return None
        from diffusers.models.embeddings import get_3d_rotary_pos_embed
        from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

        gh, gw = h // c.patch_size, w // c.patch_size
        crops = get_resize_crop_region_for_grid((gh, gw), c.sample_width // c.patch_size,
                                                c.sample_height // c.patch_size)
        return get_3d_rotary_pos_embed(embed_dim=c.attention_head_dim, crops_coords=crops, grid_size=(gh, gw),
                                       temporal_size=frames, device=self.device)

    def _v(self, x, t, text):
        F_, h, w = x.shape[1], x.shape[-2], x.shape[-1]
        return self.transformer(hidden_states=x.to(self.dtype), encoder_hidden_states=text,
                                timestep=torch.tensor([t], device=self.device), image_rotary_emb=self._rope(F_, h, w),
                                return_dict=False)[0]

    # ---- features
    def _window_features(self, frames, noise_level, spec, seed, cond):
        lat = self._encode_pixels(to_pixels(frames, self.pixel_multiple))
        x = self.noise_to(lat, noise_level, seed) if self.add_noise else lat
        F_, h, w = lat.shape[1], lat.shape[-2] // self.transformer.config.patch_size, \
            lat.shape[-1] // self.transformer.config.patch_size
        text = self._prompt(cond)
        with Capture(spec.keys()) as cap:
            for i in spec.layers:
                blk = self.transformer.transformer_blocks[i]
                if "block" in spec.kinds:
                    cap.on_output(blk, f"block{i}", lambda o: o[0])
                if "q" in spec.kinds or "k" in spec.kinds:
                    orig = blk.attn1.processor
                    blk.attn1.processor = _QKRecorder(orig, cap, i, spec.kinds, spec.rope)
                    cap.handles.append(RestoreProcessor(blk.attn1, orig))
            got = cap.run(lambda: self._v(x, self.timestep_from_noise_level(noise_level), text))
        out = {}
        for k, v in got.items():
            if k.startswith("block"):                                   # [1, F*h*w, D] -> [F, D, h, w]
                out[k] = v[0].reshape(F_, h, w, -1).permute(0, 3, 1, 2)
            else:                                                       # [1, heads, F*h*w, hd] -> [F, heads, hd, h, w]
                v = v[0] if spec.heads is None else v[0, spec.heads]
                out[k] = v.reshape(v.shape[0], F_, h, w, -1).permute(1, 0, 4, 2, 3)
        return out

    def _feature_meta(self, noise_level, spec, layer, kind):
        meta = super()._feature_meta(noise_level, spec, layer, kind)
        meta.update(frame_as_latent=self.frame_as_latent, add_noise=self.add_noise,
                    rope_used=bool(self.transformer.config.use_rotary_positional_embeddings))
        return meta

    # ---- guided SDEdit (text guidance only: this is a text-to-video model; images in the conds are unused)
    def _regenerate(self, frames, noise_level, positive, negative, guidance, steps, mask, seed, progress):
        T, H, W, _ = frames.shape
        px = to_pixels(frames, self.pixel_multiple)
        lat = self._encode_pixels(px)
        texts = {"pos": self._prompt(positive), "neg": self._prompt(negative)}
        m = None
        if mask is not None:
            if self.temporal_compression != 1:
                raise ValueError("mask: needs frame_as_latent=True (one latent frame per video frame)")
            m = latent_mask(mask, T, px.shape[-2:], px.shape[-2] // lat.shape[-2])
            m = m.transpose(1, 2).to(self.device)                                     # [1,T,1,h,w]
        noise = seeded_noise(lat.shape, seed, self.device)
        out = vpred_ddim_sdedit(lat, noise, self.alphas_cumprod, noise_level, steps,
                                lambda x, t, which: self._v(x, t, texts[which]).float(), float(guidance), m,
                                progress)
        x = self._decode_pixels(out)
        return from_pixels(x[:T], (H, W))


def _text_of(cond) -> str:
    """A prompt from a str, an ImageCond (its .text) or None (empty prompt)."""
    if isinstance(cond, str):
        return cond
    text = getattr(cond, "text", None)
    return text if isinstance(text, str) else ""
