"""I2VGen-XL (diffusers I2VGenXLUNet) behind the backbone protocol: TED's default video model.

Features: output of unet.up_blocks[i] ("block{i}"; TED uses decoder block 2, stride 8 px) after one forward
pass of a window (default 16 frames, TED d = 16) noised with the model's DDPM schedule (v-prediction,
zero terminal SNR, scaled_linear betas: read from the folder's scheduler config or the shipped one).
Layers are the UNet's up blocks; q/k are not offered (kinds other than "block" raise).

Conditioning as the I2VGen-XL pipeline does it, with the window's first frame as the image:
VAE latents of that frame + the frame-position ramp, CLIP image embeddings of it (the folder's
image_encoder; without one, zero image embeddings, which is exactly the pipeline's negative/unconditional
image embedding), fps 16, and the empty prompt through the folder's text encoder (zeros without one).
"""
from __future__ import annotations

import torch

from .diffusers_common import (Capture, DiffusersBackbone, clip_normalisation, cond_image, clip_pixels, ddpm_alphas_cumprod,
                               from_pixels, latent_mask, load_denoiser, load_optional, load_vae,
                               scheduler_config, to_pixels, vpred_ddim_sdedit)
from .protocol import check_noise_level
from .schedules import ddpm_noise_level, ddpm_noise, ddpm_timestep, seeded_noise

TEXT_TOKENS = 77


class I2VGenBackbone(DiffusersBackbone):
    family = "i2vgen"
    temporal_compression = 1
    window_quantum = 1
    default_window = 16
    paper_layer = 2               # TED reads decoder up block 2 (stride 8 px)

    def __init__(self, unet, vae, scheduler_cfg: dict, source: str = "", image_encoder=None,
                 clip_norm=None, fps: int = 16, **kw):
        super().__init__(source, **kw)
        from diffusers import DDIMScheduler

        self.unet, self.vae, self.image_encoder = unet, vae, image_encoder
        self.alphas_cumprod = ddpm_alphas_cumprod(DDIMScheduler, scheduler_cfg)
        pred = scheduler_cfg.get("prediction_type", "v_prediction")
        if pred != "v_prediction":
            raise ValueError(f"model: I2VGen-XL scheduler predicts '{pred}', expected v_prediction")
        self.clip_norm = clip_norm or clip_normalisation(source)
        self.fps = int(fps)
        self.num_layers = len(unet.up_blocks)
        self.num_heads, self.head_dim = 0, 0           # no per-head features for this UNet
        self.spatial_stride = 8
        self.pixel_multiple = 8 * 2 ** (len(unet.config.block_out_channels) - 1)
        self.vae_scale = float(vae.config.scaling_factor)

    @classmethod
    def load(cls, source: str, dtype=torch.float32, vae_file: str = "", **kw) -> "I2VGenBackbone":
        from diffusers import AutoencoderKL, I2VGenXLUNet

        unet = load_denoiser(I2VGenXLUNet, source, "unet", "i2vgen", dtype)
        vae = load_vae(AutoencoderKL, source, vae_file, "i2vgen", dtype)
        enc = None
        try:
            from transformers import CLIPVisionModelWithProjection
        except ImportError:          # transformers missing: zero image embeddings (documented fallback)
            CLIPVisionModelWithProjection = None
        if CLIPVisionModelWithProjection is not None:
            enc = load_optional(CLIPVisionModelWithProjection, source, "image_encoder", dtype)
        return cls(unet, vae, scheduler_config(source, "i2vgen"), source=source, image_encoder=enc, dtype=dtype, **kw)

    def _modules(self):
        return [m for m in (self.unet, self.vae, self.image_encoder) if m is not None]

    # ---- schedule
    def timestep_from_noise_level(self, noise_level: float) -> float:
        return float(ddpm_timestep(noise_level, len(self.alphas_cumprod)))

    def noise_level_from_timestep(self, t: float) -> float:
        return ddpm_noise_level(t, len(self.alphas_cumprod))

    def noise_to(self, latents: torch.Tensor, noise_level: float, seed: int) -> torch.Tensor:
        t = ddpm_timestep(check_noise_level(noise_level), len(self.alphas_cumprod))
        eps = seeded_noise(latents.shape, seed, latents.device, latents.dtype)
        return ddpm_noise(latents, eps, float(self.alphas_cumprod[t]))

    # ---- VAE: latents [1, C, T, h, w] (the UNet's layout), scaled by the VAE factor
    @torch.no_grad()
    def _encode_pixels(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.cat([self.vae.encode(c.to(self.device, self.dtype)).latent_dist.mode() for c in x.split(8)])
        return (z * self.vae_scale).float().permute(1, 0, 2, 3).unsqueeze(0)


    @torch.no_grad()
    def _decode_pixels(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents[0].permute(1, 0, 2, 3) / self.vae_scale
        return torch.cat([self.vae.decode(c.to(self.device, self.dtype)).sample.float() for c in z.split(4)])


    # ---- conditioning (the pipeline's first-frame image conditioning)
    @torch.no_grad()
    def _image_cond(self, image_px: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """image_px [1,3,H,W] in [-1,1] -> (image_latents [1,C,F,h,w], image_embeddings [1,1,D])."""
        z = self._encode_pixels(image_px)                                   # [1, C, 1, h, w]
        ramp = [torch.full_like(z, (i + 1) / (num_frames - 1)) for i in range(num_frames - 1)]
        image_latents = torch.cat([z] + ramp, 2) if ramp else z
        D = self.unet.config.cross_attention_dim
        if self.image_encoder is None:
            emb = torch.zeros(1, 1, D, device=self.device, dtype=self.dtype)
        else:
            size = self.image_encoder.config.image_size
            px = clip_pixels(image_px, size, *self.clip_norm).to(self.device, self.dtype)
            emb = self.image_encoder(px).image_embeds.unsqueeze(1)
        return image_latents.to(self.dtype), emb.to(self.dtype)

    def _prompt(self, text) -> torch.Tensor:
        text = "" if text is None else str(text)
        return self.prompt_embeddings(text, TEXT_TOKENS, (TEXT_TOKENS, self.unet.config.cross_attention_dim))

    def _unet(self, x, t, image_latents, image_emb, text):
        fps = torch.tensor([self.fps], device=self.device)
        return self.unet(x.to(self.dtype), torch.tensor([t], device=self.device), fps=fps,
                         image_latents=image_latents, image_embeddings=image_emb, encoder_hidden_states=text,
                         return_dict=False)[0]

    # ---- features
    def _window_features(self, frames, noise_level, spec, seed, cond) -> dict:
        if any(k != "block" for k in spec.kinds):
            raise ValueError("kind: I2VGen-XL offers 'block' features only (UNet up blocks)")
        px = to_pixels(frames, self.pixel_multiple)
        lat = self._encode_pixels(px)
        noisy = self.noise_to(lat, noise_level, seed)
        image = px[:1] if cond is None else to_pixels(cond_image(cond, frames.shape[1:3]).to(self.device),
                                                       self.pixel_multiple)
        il, emb = self._image_cond(image, lat.shape[2])
        text = self._prompt(getattr(cond, "text", None))
        with Capture(spec.keys()) as cap:
            for i in spec.layers:
                cap.on_output(self.unet.up_blocks[i], f"block{i}")
            return cap.run(lambda: self._unet(noisy, self.timestep_from_noise_level(noise_level), il, emb, text))

    # ---- guided SDEdit
    def _regenerate(self, frames, noise_level, positive, negative, guidance, steps, mask, seed, progress):
        T, H, W, _ = frames.shape
        px = to_pixels(frames, self.pixel_multiple)
        lat = self._encode_pixels(px)
        conds = {}
        for name, c in (("pos", positive), ("neg", negative if negative is not None else positive)):
            il, emb = self._image_cond(to_pixels(cond_image(c, (H, W)).to(self.device), self.pixel_multiple), T)
            conds[name] = (il, emb, self._prompt(getattr(c, "text", None)))
        m = latent_mask(mask, T, px.shape[-2:], px.shape[-2] // lat.shape[-2])
        m = None if m is None else m.to(self.device)                                  # [1,1,T,h,w]
        noise = seeded_noise(lat.shape, seed, self.device)

        def predict_v(x, t, which):
            return self._unet(x, t, *conds[which]).float()

        out = vpred_ddim_sdedit(lat, noise, self.alphas_cumprod, noise_level, steps, predict_v, float(guidance), m,
                                progress)
        x = self._decode_pixels(out)
        return from_pixels(x, (H, W))

