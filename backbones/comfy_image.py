"""Image diffusion features (DIFT, Tang et al. 2023, arXiv 2306.03881) from an SD 1.x / 2.x UNet that the user
loaded in ComfyUI (`model_base.BaseModel` with an openaimodel `UNetModel`, 4-channel latent; ε- or
v-prediction), for TED's appearance features (arXiv 2403.18526, Sec. 3.3).

DIFT's protocol (its `SDFeaturizer`): the clean VAE latent is noised to DDPM timestep t with the scheduler's
add_noise, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, the UNet runs once with the prompt embedding, and the
output of diffusers `up_blocks[up_ft_index]` (its upsampler included) is the feature map; with an ensemble the
image is repeated with independent noise and the features are averaged. Semantic correspondence uses t = 261,
up_ft_index 1 (stride 16 px).

Here through ComfyUI's own machinery: ComfyUI's discrete ε/v model sampling writes the same x_t as
x0 + sigma_t eps scaled by c_in = 1/sqrt(1 + sigma_t^2) with sigma_t = sqrt((1 - abar_t)/abar_t), and its
time embedding receives t exactly (sigma_t is taken from the model's own table at t). The capture is the SVD
adapter's read-only `output_block_patch` on a `model.clone()` (ComfyUI keeps the decoder as a flat
`output_blocks` list; up_blocks[i] ends at output block (nrb+1)*i + nrb), and the pass stops after it.
Conditioning: the CONDITIONING given (DIFT encodes the empty prompt "" with the model's CLIP: connect
CLIPTextEncode("")), else an all-zero context of the model's context width (our choice when no text encoder is
loaded). The same noise draws are used for every frame (our choice: frames differ only by their content).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

import comfy.model_base
import comfy.model_management

from .comfy_svd import UpBlockCapture, is_svd_model
from .native_common import conditional_forward, require_vae, resize_frames
from ..kernels.datatypes import make_feature_meta, make_features
from .protocol import ProgressFn, nearest_multiple_size

DIFT_TIMESTEP = 261          # DIFT semantic correspondence (SD 2.1)
DIFT_UP_FT_INDEX = 1


def _unet(model):
    dm = getattr(getattr(model, "model", None), "diffusion_model", None)
    return dm if type(dm).__name__ == "UNetModel" else None


def is_image_unet_model(model) -> bool:
    """An SD-style image UNet (not SVD, not a video/DiT model) with a 4-channel latent."""
    base = getattr(model, "model", None)
    if base is None or _unet(model) is None or is_svd_model(model):
        return False
    if not isinstance(base, comfy.model_base.BaseModel):
        return False
    dm = base.diffusion_model
    return getattr(dm, "use_temporal_resblocks", False) is False and int(base.latent_format.latent_channels) == 4


class ComfyImageUNet:
    """DIFT features of an SD 1.x/2.x UNet, frame by frame."""

    def __init__(self, model, vae):
        if not is_image_unet_model(model):
            base = getattr(model, "model", None)
            kind = type(base).__name__ if base is not None else type(model).__name__
            raise ValueError(f"model: {kind} is not an SD 1.x/2.x image UNet (load one with 'Load Checkpoint' or "
                             "'Load Diffusion Model')")
        self.model = model
        self.vae = vae
        base = model.model
        dm = base.diffusion_model
        nrb = dm.num_res_blocks
        self.nrb = int(nrb[0]) if isinstance(nrb, (list, tuple)) else int(nrb)
        self.levels = len(dm.output_blocks) // (self.nrb + 1)
        self.num_up_blocks = self.levels - 1      # up blocks whose output the next block's patch call sees
        self.context_dim = int(base.model_config.unet_config.get("context_dim") or 768)
        require_vae(vae, 4, "an SD image UNet needs a 4-channel image VAE (the checkpoint's VAE or taesd)")
        self.pixel_multiple = 8 * 2 ** (self.levels - 1)
        self.model_sampling = model.get_model_object("model_sampling")
        self.num_timesteps = int(getattr(self.model_sampling, "sigmas", torch.zeros(1000)).shape[0])
        self.name = f"image_unet:{type(base.model_config).__name__}:{dm.model_channels}"

    def output_block_of(self, up_ft_index: int) -> int:
        return (self.nrb + 1) * up_ft_index + self.nrb

    def layer_stride(self, up_ft_index: int) -> int:
        return self.pixel_multiple // 2 ** (up_ft_index + 1)

    def model_size(self, h: int, w: int) -> tuple[int, int]:
        return nearest_multiple_size(h, w, self.pixel_multiple)

    def sigma_at(self, timestep: int) -> float:
        t = int(timestep)
        if not 0 <= t < self.num_timesteps:
            raise ValueError(f"timestep: {t} outside 0..{self.num_timesteps - 1} (the model's DDPM steps)")
        return float(self.model_sampling.sigma(torch.tensor(float(t))))

    def _conds(self, conditioning: Any) -> list:
        if conditioning is None:
            return [[torch.zeros(1, 77, self.context_dim), {}]]
        if not isinstance(conditioning, list) or not conditioning:
            raise ValueError("conditioning: expected a CONDITIONING (e.g. CLIPTextEncode of the empty prompt)")
        width = conditioning[0][0].shape[-1]
        if width != self.context_dim:
            raise ValueError(f"conditioning: {width}-wide text embedding, the UNet expects {self.context_dim} "
                             "(use the CLIP of the same checkpoint)")
        return conditioning

    def features(self, frames: torch.Tensor, timestep: int = DIFT_TIMESTEP, up_ft_index: int = DIFT_UP_FT_INDEX,
                 ensemble_size: int = 1, seed: int = 0, conditioning: Any = None,
                 progress: ProgressFn = None) -> dict:
        """frames [T,H,W,3] 0..1 -> VDT_FEATURES [T,C,h,w] (h = H'/stride of the resized model input).

        Frames are resized to the nearest multiples of the UNet's pixel multiple (64 px for SD); strides are
        reported in the input's pixels. Raises ValueError for an up block without a following block, a
        timestep outside the schedule or an ensemble size < 1."""
        if not 0 <= int(up_ft_index) < self.num_up_blocks:
            raise ValueError(f"up_ft_index: {up_ft_index} outside 0..{self.num_up_blocks - 1} (DIFT: 1 for "
                             "semantic matching, 2 for geometry)")
        if int(ensemble_size) < 1:
            raise ValueError(f"ensemble_size: {ensemble_size} must be >= 1")
        sigma = self.sigma_at(timestep)
        if sigma <= 0:
            raise ValueError(f"timestep: {timestep} has no noise in this model's schedule")
        conds = self._conds(conditioning)
        frames = frames[..., :3].float()
        T, H, W = frames.shape[:3]
        size = self.model_size(H, W)
        x = resize_frames(frames, size)
        out: Optional[torch.Tensor] = None
        end = self.output_block_of(int(up_ft_index))
        for t in range(T):
            comfy.model_management.throw_exception_if_processing_interrupted()
            lat = self.vae.encode(x[t:t + 1]).float()
            lat = lat.expand(int(ensemble_size), *lat.shape[1:]).contiguous()
            cap = UpBlockCapture({int(up_ft_index): end}, True, comfy.model_management.intermediate_device())
            patched = self.model.clone()
            cap.install(patched)
            conditional_forward(patched, lat, sigma, conds, int(seed))
            f = cap.store.get(f"block{int(up_ft_index)}")
            if f is None:
                raise RuntimeError(f"capture: up block {up_ft_index} was not produced by the forward pass")
            f = f.float().mean(0)
            if out is None:
                out = f.new_empty((T,) + tuple(f.shape))
            out[t] = f
            if progress is not None:
                progress()
        meta = make_feature_meta(self.name, "block", family="image_unet", layer=int(up_ft_index),
                                 timestep=int(timestep), up_ft_index=int(up_ft_index), output_block=end, sigma=sigma,
                                 ensemble_size=int(ensemble_size), seed=int(seed), model_size=size,
                                 protocol="DIFT (per frame)")
        return make_features(out, (H / out.shape[-2], W / out.shape[-1]), (H, W), meta)
