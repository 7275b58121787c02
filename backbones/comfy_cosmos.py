"""ComfyUI-native Cosmos-Predict2 adapter (HeFT's default backbone): a loaded MODEL + the Wan 2.1 VAE.

Covers what ComfyUI 0.3.75 loads as `model_base.CosmosPredict2` with a `MiniTrainDIT`: Video2World
(`CosmosI2VPredict2`, 17 input channels = latent + condition mask) and Text2Image (`CosmosT2IPredict2`, 16;
features only). Cosmos-Predict2 shares the Wan 2.1 VAE and latent format; VAE handling, windows, token
grids and the feature loop are native_dit.NativeDiTBackbone's (the base it shares with the Wan adapter); what
is Cosmos' own is below.

Schedule (ComfyUI's FLOW_COSMOS = ModelSamplingCosmosRFlow + COSMOS_RFLOW): the sampler's sigma is EDM-like,
log-linear in noise_level between sigma_min 0.002 and sigma_max 80 (percent_to_sigma), the sampler carries
x0 + sigma*eps and the DiT sees it divided by (1 + sigma), i.e. the rectified-flow latent
(1-t) x0 + t eps with t = sigma/(1+sigma); t is also what the time embedding receives (timestep = 1000 t).
`noise_to` returns that flow latent (what the DiT sees; HeFT's scale_noise).

Capture (capture.py's DitCapture, installed on model.clone() only): predict2.py has no patches_replace, so
- q/k: `transformer_options["optimized_attention_override"]` sees every attention call; each block calls
  self-attention then cross-attention, so call 2i of a forward pass is block i's self-attention (its q/k
  come after QK-norm and after RoPE, in the [b, heads, tokens, d] layout). The token count of the q/k taken is
  checked against the video tokens (a RuntimeError if predict2.py ever changes that order). A DIFFUSION_MODEL wrapper resets
  the count per forward. "before" RoPE inverts Cosmos' half-split rotation with the DiT's own rotary table.
- block outputs: the DIFFUSION_MODEL wrapper registers forward hooks on the requested blocks for the
  duration of that one call and removes them in `finally` (no ComfyUI patch point exists for them).
- stop early: StopForward is raised after the deepest capture and caught around the model call.
Conditioning: the empty prompt is an all-zero T5 context [1, 8, 1024]
(equal to 512 zero tokens); no image conditioning by default
(condition mask all zeros, as HeFT). Video2World image conditioning is ComfyUI's: `concat_mask` (0 on the
known latent frame) sets the mask channel and the zero timestep of that frame; the known frame's clean
latent is written into the DiT input per CFG branch (transformer_options["cond_or_uncond"]) by the shared
DIFFUSION_MODEL wrapper (native_common.install_first_frames, also used for Wan 2.2 TI2V), so the positive and negative
branches can see different first frames.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch

import comfy.model_base
import comfy.patcher_extension

from . import schedules
from .capture import DitCapture, StopForward
from .native_common import WRAPPER_KEY, sdedit_sigmas
from .native_dit import NativeDiTBackbone
from .protocol import FeatureSpec, ImageCond, ProgressFn, check_noise_level

# An all-zero context gives zero cross-attention keys/values (bias-free projections, RMSNorm(0) = 0), so the
# cross-attention output is 0 whatever its length: 8 zero tokens equal 512 (tested) at 1/64 of the cost.
EMPTY_TEXT_LEN = 8


def is_cosmos_model(model) -> bool:
    from comfy.ldm.cosmos.predict2 import MiniTrainDIT

    base = getattr(model, "model", None)
    return (isinstance(base, comfy.model_base.CosmosPredict2)
            and isinstance(getattr(base, "diffusion_model", None), MiniTrainDIT))


def cosmos_rope_groups(head_dim: int) -> tuple[int, int, int]:
    """(T, H, W) RoPE channel counts of VideoRopePosition3DEmb: H = W = head_dim//6*2, T = the rest."""
    hw = head_dim // 6 * 2
    return head_dim - 2 * hw, hw, hw


def inverse_rope_half(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Undo predict2.apply_rotary_pos_emb (half-split pairs (i, i + d/2)): x [..., L, d] rotated with
    freqs [L, d/2, 2, 2] -> the unrotated tensor (the rotation is orthogonal: apply its transpose)."""
    d = x.shape[-1]
    y = x.float().reshape(*x.shape[:-1], 2, d // 2).movedim(-2, -1)            # [..., L, d/2, 2]
    out = (freqs.transpose(-1, -2) * y.unsqueeze(-2)).sum(-1)                  # [..., L, d/2, 2]
    return out.movedim(-1, -2).reshape(*x.shape)


class CosmosCapture(DitCapture):
    """DitCapture for MiniTrainDIT: blocks are found by counting attention calls (2 per block)."""

    def __init__(self, spec: FeatureSpec, num_heads: int, stop_early: bool = True,
                 to_device: Optional[torch.device] = None):
        # q/k reach the override after RoPE; "before" is undone here with Cosmos' own layout
        super().__init__(replace(spec, rope="after"), num_heads, stop_early, to_device)
        self.rope = spec.rope
        self._calls = 0
        self._freqs: Optional[torch.Tensor] = None

    def install(self, patcher) -> None:
        to = patcher.model_options.setdefault("transformer_options", {})
        patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY + "_capture",
                                     self._wrapper)
        to["optimized_attention_override"] = self._counting(self._attention_override(
            to.get("optimized_attention_override")))

    def _wrapper(self, executor, x, timesteps, context, fps=None, padding_mask=None, **kwargs):
        dm = executor.class_obj
        self._calls, self._layer, self._freqs = 0, None, None
        b, _, t, h, w = x.shape
        grid = (t // dm.patch_temporal, h // dm.patch_spatial, w // dm.patch_spatial)
        self._tokens = grid[0] * grid[1] * grid[2]            # video tokens: what self-attention must see
        if self.rope == "before" and self._wants_qk:
            shape = torch.Size((b,) + grid + (dm.model_channels,))
            self._freqs = dm.pos_embedder.generate_embeddings(shape, fps=fps, device=x.device)
        hooks = []
        try:
            if "block" in self.spec.kinds:
                for i in sorted(set(self.spec.layers)):
                    hooks.append(dm.blocks[i].register_forward_hook(self._block_hook(i)))
            return executor(x, timesteps, context, fps, padding_mask, **kwargs)
        finally:
            for hk in hooks:
                hk.remove()
            self._layer, self._tokens = None, None

    def _counting(self, inner):
        def override(func, *args, **kwargs):
            n = self._calls
            self._calls += 1
            if n % 2 == 0:                       # block n//2 starts with its self-attention
                block = n // 2
                self.blocks_run.append(block)
                self._layer = block if block in self.spec.layers else None
                self._attn_calls = 0
            else:
                self._layer = None
            return inner(func, *args, **kwargs)
        return override

    def _block_hook(self, i: int):
        def hook(module, args, output):
            self._put(f"block{i}", output.flatten(1, 3))          # [b, T, H, W, D] -> [b, L, D]
            if self.stop_early and i == self.deepest:
                raise StopForward()
        return hook

    def _take_qk(self, layer: int, q: torch.Tensor, k: torch.Tensor, kwargs: dict) -> None:
        self._check_self_attention(layer, q, k, 2 if kwargs.get("skip_reshape", False) else 1)
        if self.rope == "before":
            if self._freqs is None:
                raise ValueError("rope: 'before' needs the DiT's rotary table (not available here)")
            f = self._freqs.to(q.device)
            if kwargs.get("skip_reshape", False):                 # [b, heads, L, d]
                q, k = inverse_rope_half(q, f), inverse_rope_half(k, f)
            else:
                raise ValueError("rope: unexpected attention layout for 'before'")
        super()._take_qk(layer, q, k, kwargs)


class ComfyCosmosBackbone(NativeDiTBackbone):
    family = "cosmos"
    rope_layout = "half_split"      # channel i and i + C/2 share a frequency
    default_window = 25          # HeFT's chunk_size (4k+1 frames for the causal Wan VAE)

    _expected_model = "a Cosmos-Predict2 model (MiniTrainDIT)"
    _needed_vae = "Cosmos-Predict2 needs the {c}-channel Wan 2.1 VAE"
    _is_model = staticmethod(is_cosmos_model)
    _capture_class = CosmosCapture       # on the conditional branch only, as HeFT records the conditional pass
    _regen_scheduler = "karras"
    _empty_text_len = EMPTY_TEXT_LEN
    _text_encoder = "the old T5-XXL text encoder for Cosmos-Predict2"

    def _read_dit(self, base, dm) -> None:
        self.head_dim = int(dm.model_channels // dm.num_heads)
        self.in_channels = int(dm.in_channels)
        self.image_input = bool(getattr(base, "image_to_video", False))       # Video2World: condition mask
        self.uses_clip = False
        self.text_dim = int(dm.blocks[0].cross_attn.context_dim)
        self.rope_groups = cosmos_rope_groups(self.head_dim)

    @staticmethod
    def _dit_patch(dm) -> int:
        return int(dm.patch_spatial)

    def _read_sampling(self) -> None:
        self.sigma_min = float(self.model_sampling.sigma_min)
        self.sigma_max = float(self.model_sampling.sigma_max)
        self.shift = 1.0

    def _dit_name(self, base, dm) -> str:
        kind = "v2w" if self.image_input else "t2i"
        return f"cosmos:{kind}:{self.num_layers}x{dm.model_channels}"

    # ---------------------------------------------------------------- schedule
    def sigma_at(self, noise_level: float) -> float:
        """ComfyUI's sampler sigma for `noise_level` (EDM-like, as percent_to_sigma(1 - noise_level))."""
        return schedules.edm_sigma(check_noise_level(noise_level), self.sigma_min, self.sigma_max)

    def flow_t(self, noise_level: float) -> float:
        s = self.sigma_at(noise_level)
        return s / (1.0 + s)

    def timestep_from_noise_level(self, noise_level: float) -> float:
        return 1000.0 * self.flow_t(noise_level)

    def noise_level_from_timestep(self, t: float) -> float:
        if not (0.0 <= float(t) <= 1000.0):
            raise ValueError(f"timestep: {t} must be in [0, 1000]")
        tf = float(t) / 1000.0
        if tf >= self.sigma_max / (self.sigma_max + 1.0):
            return 1.0
        return schedules.edm_noise_level(tf / (1.0 - tf), self.sigma_min, self.sigma_max)

    def noise_to(self, latents: torch.Tensor, noise_level: float, seed: int) -> torch.Tensor:
        """The flow latent the DiT sees at `noise_level`: (1-t) x0 + t eps, t = sigma/(1+sigma)."""
        eps = schedules.seeded_noise(latents.shape, seed, latents.device, latents.dtype)
        return schedules.flow_noise(latents, eps, self.flow_t(noise_level))

    # ---------------------------------------------------------------- conditioning
    def _image_extra(self, cond: Optional[ImageCond], length: int, size: tuple[int, int],
                     need_image: bool) -> dict:
        """Video2World first-frame conditioning: ComfyUI's concat_mask (0 on the known latent frame) plus the
        model-space latent of the image, which the wrapper writes into the DiT input of that branch."""
        has_image = cond is not None and cond.image is not None
        if not self.image_input:
            if need_image or has_image:
                raise ValueError("model: this Cosmos-Predict2 model is Text2Image (16 input channels); image-"
                                 "conditioned use needs Cosmos-Predict2 Video2World (17 input channels)")
            return {}
        if not has_image:
            if need_image:
                raise ValueError("image: a Video2World regeneration needs a first-frame image")
            return {}
        return self._first_latent_extra(cond.image, length, size, "concat_mask")

    # ---------------------------------------------------------------- regeneration
    def regenerate_latent(self, x0: torch.Tensor, noise_level: float, positive: list, negative: list,
                          guidance: float, steps: int, latent_mask: Optional[torch.Tensor] = None,
                          seed: int = 0, progress: ProgressFn = None) -> torch.Tensor:
        """SDEdit on a model-space latent; per step den = den_pos + w (den_pos - den_neg) (ComfyUI CFG with
        cfg = 1 + w) on the Karras schedule of Cosmos (sigma_min..sigma_max). The known first latent frame is
        kept (set to the positive image's latent), outside `latent_mask` the original latent is kept."""
        sigmas = sdedit_sigmas(self, self._regen_scheduler, noise_level, steps, guidance)
        if len(sigmas) < 2:
            return x0.clone()
        return self._first_frame_euler(x0, sigmas, positive, negative, guidance, latent_mask, seed, progress)
