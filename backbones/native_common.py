"""What the ComfyUI-native adapters (comfy_wan, comfy_cosmos, comfy_svd) share: one conditional forward pass
through ComfyUI's CFGGuider with capture patches, guided Euler SDEdit through ComfyUI's sampler, the per-branch
first-frame wrapper, input checks, frame resizing and the frame side of `regenerate` (NativeRegeneration).

Everything is installed on a `ModelPatcher.clone()` (never on the shared model) and sampled by ComfyUI itself, so
LoRAs, model patches, the inpainting `denoise_mask` and ComfyUI's memory management (CFGGuider loads the model with
load_models_gpu) all apply. Latents handed to these helpers are in *model space* (process_latent_in of the VAE
latent) unless a docstring says otherwise.
"""
from __future__ import annotations

import abc
from typing import Optional

import torch
import torch.nn.functional as F

import comfy.patcher_extension
import comfy.samplers

from . import schedules
from .capture import StopForward
from .protocol import FeatureSpec, ProgressFn, check_noise_level

FIRST_LATENT_KEY = "vdtrack_first_latent"      # private conditioning key (ComfyUI's extra_conds ignore it)
WRAPPER_KEY = "vdtrack"


def _transformer_options(args: tuple, kwargs: dict) -> dict:
    """A DIFFUSION_MODEL wrapper gets transformer_options as a keyword (Cosmos' MiniTrainDIT) or positionally
    (WanModel.forward passes it as its sixth argument); it is the dict carrying "cond_or_uncond"."""
    to = kwargs.get("transformer_options")
    if isinstance(to, dict):
        return to
    return next((a for a in args if isinstance(a, dict) and "cond_or_uncond" in a), {})


def install_first_frames(patcher, positive: list, negative: list) -> None:
    """DIFFUSION_MODEL wrapper on `patcher` (a clone): the clean first-frame latent (model space, conditioning key
    FIRST_LATENT_KEY) of each CFG branch replaces the known latent frame(s) of that branch's DiT input. ComfyUI's
    inpainting would write one latent shared by both branches; counterfactual guidance needs the positive branch
    to see the edited first frame and the negative branch the unedited one. No key on either side: nothing."""
    pos = [c[1].get(FIRST_LATENT_KEY) for c in positive]
    neg = [c[1].get(FIRST_LATENT_KEY) for c in negative]
    if not any(p is not None for p in pos + neg):
        return
    first = {0: pos[0], 1: neg[0]}

    def wrapper(executor, x, *args, **kwargs):
        branches = _transformer_options(args, kwargs).get("cond_or_uncond", [0])
        per = x.shape[0] // max(len(branches), 1)
        x = x.clone()
        for j, b in enumerate(branches):
            lat = first.get(b)
            if lat is not None:
                x[j * per:(j + 1) * per, : lat.shape[1], : lat.shape[2]] = lat.to(x.device, x.dtype)
        return executor(x, *args, **kwargs)

    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY + "_first_frame",
                                 wrapper)



def conditional_forward(patched, latent: torch.Tensor, sigma: float, conds: list, seed: int) -> None:
    """One forward pass of `patched` (a clone carrying capture patches) at `sigma`, conditional branch only,
    through ComfyUI's own CFGGuider so conds, concat latents and the model's patches are handled by ComfyUI.
    `latent` is in LATENT space (process_latent_out). A capture may end the pass early with StopForward."""
    noise = schedules.seeded_noise(latent.shape, seed, latent.device, torch.float32)

    def one_call(model, x, sigmas, extra_args=None, callback=None, disable=None):
        try:
            model(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))
        except StopForward:
            pass
        return x

    guider = comfy.samplers.CFGGuider(patched)
    guider.set_conds(conds, conds)
    guider.set_cfg(1.0)              # ComfyUI skips the negative branch at cfg 1
    guider.sample(noise, latent, comfy.samplers.KSAMPLER(one_call), torch.tensor([float(sigma), 0.0]),
                  disable_pbar=True, seed=seed)


def guided_euler(patched, model_latent: torch.Tensor, sigmas: torch.Tensor, positive: list, negative: list,
                 guidance: float, denoise_mask, seed: int, progress=None, item_noise: bool = False) -> torch.Tensor:
    """SDEdit with ComfyUI's Euler sampler and CFGGuider on `patched` from model-space `model_latent` along
    `sigmas`: ComfyUI's CFG neg + cfg (pos - neg) with cfg = 1 + w is v_pos + w (v_pos - v_neg). The
    denoise_mask (1 = regenerate) is ComfyUI's inpainting rule. item_noise: the batch axis holds separate
    generations (batched regeneration), each starting from the noise one item draws with `seed`.
    Returns the model-space result."""
    if item_noise:      # batch axis = generations: each gets the noise one item draws with `seed`
        one = (1,) + tuple(model_latent.shape[1:])
        noise = schedules.seeded_noise(one, seed, model_latent.device, torch.float32)
        noise = noise.repeat(model_latent.shape[0], *([1] * (len(one) - 1)))
    else:               # e.g. SVD, whose batch axis is the video's frames
        noise = schedules.seeded_noise(model_latent.shape, seed, model_latent.device, torch.float32)
    guider = comfy.samplers.CFGGuider(patched)
    guider.set_conds(positive, negative)
    guider.set_cfg(1.0 + float(guidance))

    def on_step(i, denoised, x, total):
        if progress is not None:
            progress()
    base = patched.model
    out = guider.sample(noise, base.process_latent_out(model_latent.float()), comfy.samplers.sampler_object("euler"),
                        sigmas, denoise_mask=denoise_mask, callback=on_step, disable_pbar=True, seed=seed)
    return base.process_latent_in(out.float())


def require_model(ok: bool, model, expected: str) -> None:
    """ValueError naming the `model` input when `ok` is False (expected: what the adapter needs)."""
    if not ok:
        raise ValueError(f"model: expected {expected}, got {type(getattr(model, 'model', model)).__name__}")


def require_vae(vae, channels: int, needs: str) -> None:
    """ValueError naming the `vae` input unless it gives `channels` latent channels (needs: what is needed)."""
    if vae is None or getattr(vae, "latent_channels", None) != channels:
        raise ValueError(f"vae: {needs}, got {getattr(vae, 'latent_channels', None)} channels")


def captured_forward(patched, cap, x0: torch.Tensor, sigma: float, spec: FeatureSpec, seed: int,
                     conds: list) -> dict[str, torch.Tensor]:
    """Install `cap` on `patched` (a clone of the adapter's MODEL), run one conditional forward pass at `sigma` on
    the model-space latent x0 and return the captures keyed like spec.keys(). RuntimeError when a requested
    key was not produced (the pass never reached that layer)."""
    cap.install(patched)
    conditional_forward(patched, patched.model.process_latent_out(x0.float()), sigma, conds, seed)
    missing = [k for k in spec.keys() if k not in cap.store]
    if missing:
        raise RuntimeError(f"capture: {missing} were not produced by the forward pass")
    return cap.store


def sdedit_sigmas(bb, scheduler: str, noise_level: float, steps: int, guidance: float) -> torch.Tensor:
    """The tail of bb's `scheduler` schedule (ComfyUI's calculate_sigmas) from sigma(noise_level) for an SDEdit."""
    if guidance < 0:
        raise ValueError(f"guidance: {guidance} must be >= 0")
    full = comfy.samplers.calculate_sigmas(bb.model_sampling, scheduler, int(steps)).float()
    return schedules.sdedit_tail(full, noise_level, bb.sigma_at(noise_level))


def resize_frames(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[T,H,W,3] -> [T,*size,3] (antialiased bilinear, clamped to 0..1); unchanged when already that size."""
    if tuple(img.shape[1:3]) == tuple(size):
        return img
    x = F.interpolate(img.movedim(-1, 1).float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0, 1).movedim(1, -1)


def first_frame(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An ImageCond's image ([H,W,C] or [B,H,W,C]) as one RGB frame [1,*size,3] (float)."""
    img = image if image.ndim == 4 else image[None]
    return resize_frames(img[:1, ..., :3].float(), size)


class NativeRegeneration(abc.ABC):
    """The protocol's `regenerate` for the ComfyUI-native adapters: frames at the model's size, the family's
    latent, conditionings and latent mask (`_regen_inputs`), its sampler (`regenerate_latent`), decoded back to
    the given size. Needs model_size, decode and regenerate_latent."""

    @abc.abstractmethod
    def _regen_inputs(self, x: torch.Tensor, frames: int, positive, negative, mask: Optional[torch.Tensor]
                      ) -> tuple[torch.Tensor, list, list, Optional[torch.Tensor]]:
        """x [T,h,w,3] (frames at model_size), `frames` = T -> (model-space latent x0, positive and negative
        CONDITIONING lists, the MASK [T,H,W] on the latent grid or None)."""

    def _at_model_size(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [T,H,W,C] -> (their first three channels as float [T,H,W,3], the same resized to model_size
        [T,h,w,3]): what every native features/regenerate pass starts from."""
        frames = frames[..., :3].float()
        return frames, resize_frames(frames, self.model_size(*frames.shape[1:3]))

    def regenerate(self, frames: torch.Tensor, noise_level: float, positive, negative, guidance: float, steps: int,
                   mask: Optional[torch.Tensor] = None, seed: int = 0, progress: ProgressFn = None) -> torch.Tensor:
        """Guided SDEdit of frames [T,H,W,3] 0..1 (first three channels) with ImageCond prompts, mask [T,H,W] (1 =
        regenerate) or None -> IMAGE [T,H,W,3] 0..1 at the given size (ValueError naming noise_level/steps)."""
        noise_level = check_noise_level(noise_level)
        frames, x = self._at_model_size(frames)
        T, H, W = frames.shape[:3]
        x0, pos, neg, lat_mask = self._regen_inputs(x, T, positive, negative, mask)
        out = self.regenerate_latent(x0, noise_level, pos, neg, guidance, steps, lat_mask, seed, progress)
        return resize_frames(self.decode(out)[:T], (H, W)).clamp(0, 1)
