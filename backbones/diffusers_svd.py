"""Stable Video Diffusion (diffusers UNetSpatioTemporalConditionModel) behind the backbone protocol.

Features (Track4Gen-style): output of unet.up_blocks[i] ("block{i}"); for i < last that is the block's
upsampler output, so block2 == up_blocks[2].upsamplers[0] (third decoder block, stride 8 px).
Noise: EDM, x = x0 + sigma*eps with sigma log-linear in noise_level between the scheduler's sigma_min and
sigma_max (ComfyUI's percent_to_sigma); the UNet sees c_in*x, timestep 0.25*ln(sigma), v-prediction
(denoised = c_skip*x + c_out*v with sigma_data 1).
Conditioning as the SVD pipeline, the window's first frame as the image: unscaled VAE latent of the
image (+ noise_aug_strength noise) concatenated on channels to every frame, CLIP image embedding as the
cross-attention context (the folder's image_encoder; zeros without one: the pipeline's unconditional
embedding), added_time_ids = (fps-1, motion_bucket_id, noise_aug_strength) = (6, 127, 0.02).
Windows: 14 frames (SVD) or 25 (SVD-XT), from the UNet config's num_frames.
"""
from __future__ import annotations

import math

import torch

from .diffusers_common import (Capture, DiffusersBackbone, clip_normalisation, clip_pixels, cond_image, from_pixels,
                               latent_mask, load_denoiser, load_optional, load_vae, masked_guided_euler,
                               scheduler_config, to_pixels)
from .protocol import check_noise_level
from .schedules import edm_noise_level, edm_noise, edm_sigma, sdedit_tail, seeded_noise


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """The Karras et al. schedule (SVD's default), descending, with a final 0."""
    r = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    s = (hi + r * (lo - hi)) ** rho
    return torch.cat([s, s.new_zeros(1)]).float()


class SVDBackbone(DiffusersBackbone):
    family = "svd"
    temporal_compression = 1
    window_quantum = 1
    paper_layer = 2               # Track4Gen reads up_blocks[2] (stride 8 px)

    def __init__(self, unet, vae, scheduler_cfg: dict, source: str = "", image_encoder=None, clip_norm=None,
                 fps: int = 7, motion_bucket_id: int = 127, noise_aug_strength: float = 0.02, **kw):
        super().__init__(source, **kw)
        self.unet, self.vae, self.image_encoder = unet, vae, image_encoder
        pred = scheduler_cfg.get("prediction_type", "v_prediction")
        if pred != "v_prediction":
            raise ValueError(f"model: SVD scheduler predicts '{pred}', expected v_prediction")
        self.sigma_min = float(scheduler_cfg.get("sigma_min") or 0.002)
        self.sigma_max = float(scheduler_cfg.get("sigma_max") or 700.0)
        self.clip_norm = clip_norm or clip_normalisation(source)
        self.time_ids = (fps - 1, motion_bucket_id, noise_aug_strength)
        self.num_layers = len(unet.up_blocks)
        self.num_heads, self.head_dim = 0, 0
        self.spatial_stride = 8
        self.default_window = int(unet.config.num_frames)
        self.pixel_multiple = 8 * 2 ** (len(unet.config.block_out_channels) - 1)
        self.vae_scale = float(vae.config.scaling_factor)

    @classmethod
    def load(cls, source: str, dtype=torch.float32, vae_file: str = "", **kw) -> "SVDBackbone":
        from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

        unet = load_denoiser(UNetSpatioTemporalConditionModel, source, "unet", "svd", dtype)
        vae = load_vae(AutoencoderKLTemporalDecoder, source, vae_file, "svd", dtype)
        try:
            from transformers import CLIPVisionModelWithProjection
            enc = load_optional(CLIPVisionModelWithProjection, source, "image_encoder", dtype)
        except ImportError:          # no transformers: zero image embeddings (documented fallback)
            enc = None
        return cls(unet, vae, scheduler_config(source, "svd"), source=source, image_encoder=enc, dtype=dtype, **kw)

    def _modules(self):
        return [m for m in (self.unet, self.vae, self.image_encoder) if m is not None]

    # ---- schedule: the "timestep" is what the UNet's time embedding receives, 0.25*ln(sigma)
    def sigma_from_noise_level(self, noise_level: float) -> float:
        return edm_sigma(noise_level, self.sigma_min, self.sigma_max)

    def timestep_from_noise_level(self, noise_level: float) -> float:
        s = self.sigma_from_noise_level(noise_level)
        return 0.25 * math.log(max(s, 1e-12))

    def noise_level_from_timestep(self, t: float) -> float:
        return edm_noise_level(math.exp(4.0 * float(t)), self.sigma_min, self.sigma_max)

    def noise_to(self, latents, noise_level, seed):
        eps = seeded_noise(latents.shape, seed, latents.device, latents.dtype)
        return edm_noise(latents, eps, self.sigma_from_noise_level(check_noise_level(noise_level)))

    # ---- VAE: latents [1, T, C, h, w] (the UNet's layout), scaled
    @torch.no_grad()
    def _encode_pixels(self, x, scale=True):
        z = torch.cat([self.vae.encode(c.to(self.device, self.dtype)).latent_dist.mode() for c in x.split(8)])
        return (z * (self.vae_scale if scale else 1.0)).float().unsqueeze(0)


    @torch.no_grad()
    def _decode_pixels(self, latents):
        z = (latents[0] / self.vae_scale).to(self.device, self.dtype)
        return self.vae.decode(z, num_frames=z.shape[0]).sample.float()


    # ---- conditioning
    @torch.no_grad()
    def _image_cond(self, image_px, seed):
        """image_px [1,3,H,W] in [-1,1] -> (unscaled image latent [1,1,C,h,w], CLIP embedding [1,1,D])."""
        aug = self.time_ids[2] * seeded_noise(image_px.shape, seed + 7919, image_px.device)
        z = self._encode_pixels(image_px + aug, scale=False)
        D = self.unet.config.cross_attention_dim
        if self.image_encoder is None:
            emb = torch.zeros(1, 1, D, device=self.device, dtype=self.dtype)
        else:
            px = clip_pixels(image_px, self.image_encoder.config.image_size, *self.clip_norm)
            emb = self.image_encoder(px.to(self.device, self.dtype)).image_embeds.unsqueeze(1)
        return z.to(self.dtype), emb.to(self.dtype)

    def _denoise(self, x, sigma, image_latent, emb):
        """EDM preconditioned v-prediction -> denoised latent (float32)."""
        c_in = 1.0 / math.sqrt(sigma ** 2 + 1.0)
        c_skip, c_out = 1.0 / (sigma ** 2 + 1.0), -sigma / math.sqrt(sigma ** 2 + 1.0)
        inp = torch.cat([x * c_in, image_latent.expand(-1, x.shape[1], -1, -1, -1)], 2).to(self.dtype)
        t = torch.tensor([0.25 * math.log(sigma)], device=self.device)
        ids = torch.tensor([self.time_ids], device=self.device, dtype=self.dtype)
        v = self.unet(inp, t, emb, ids, return_dict=False)[0].float()
        return c_skip * x + c_out * v

    # ---- features
    def _window_features(self, frames, noise_level, spec, seed, cond):
        if any(k != "block" for k in spec.kinds):
            raise ValueError("kind: SVD offers 'block' features only (UNet up blocks)")
        if noise_level == 0.0:
            raise ValueError("noise_level: SVD (EDM) needs a noise_level > 0 (sigma 0 has no timestep)")
        px = to_pixels(frames, self.pixel_multiple)
        lat = self._encode_pixels(px)
        sigma = self.sigma_from_noise_level(noise_level)
        noisy = self.noise_to(lat, noise_level, seed)
        image = px[:1] if cond is None else to_pixels(cond_image(cond, frames.shape[1:3]).to(self.device),
                                                       self.pixel_multiple)
        il, emb = self._image_cond(image, seed)
        with Capture(spec.keys()) as cap:
            for i in spec.layers:
                cap.on_output(self.unet.up_blocks[i], f"block{i}")
            return cap.run(lambda: self._denoise(noisy, sigma, il, emb))

    # ---- guided SDEdit: Euler on the Karras schedule's tail that starts at sigma(noise_level)
    def _regenerate(self, frames, noise_level, positive, negative, guidance, steps, mask, seed, progress):
        T, H, W, _ = frames.shape
        px = to_pixels(frames, self.pixel_multiple)
        lat = self._encode_pixels(px)
        conds = {n: self._image_cond(to_pixels(cond_image(c, (H, W)).to(self.device), self.pixel_multiple), seed)
                 for n, c in (("pos", positive), ("neg", negative if negative is not None else positive))}
        m = latent_mask(mask, T, px.shape[-2:], px.shape[-2] // lat.shape[-2])
        m = None if m is None else m.transpose(1, 2).to(self.device)          # [1,T,1,h,w]
        noise = seeded_noise(lat.shape, seed, self.device)
        sig = sdedit_tail(karras_sigmas(steps, self.sigma_min, self.sigma_max), noise_level,
                          self.sigma_from_noise_level(noise_level))
        x = masked_guided_euler(lat, noise, sig, lambda x, s, b: self._denoise(x, s, *conds[b]), edm_noise,
                                guidance, m, progress)
        out = self._decode_pixels(x)
        return from_pixels(out, (H, W))
