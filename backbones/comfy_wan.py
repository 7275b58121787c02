"""ComfyUI-native Wan adapter: a loaded MODEL (ModelPatcher) + VAE (+ optional CLIP_VISION_OUTPUT).

Covers what ComfyUI 0.3.75 loads as `model_base.WAN21` / `WAN22` with a `WanModel` DiT: Wan 2.1 T2V and
I2V (CLIP image tokens), Wan 2.2 14B T2V/I2V (I2V = in_dim 36 without CLIP) and Wan 2.2 5B TI2V
(`model_base.WAN22`: 48-channel latent, 16x VAE, so 32 px per token).

Wan 2.2 TI2V conditions on the first frame through the latent itself, as core Wan22ImageToVideoLatent does: the
first latent frame is the VAE latent of the image and a noise mask (0 on that frame) keeps it clean; WAN22 turns
the mask into per-frame timesteps (0 on the known frame). Here the mask travels on each conditioning as
`denoise_mask` (ComfyUI lets a conditioning's own key win over the sampler's, so the timesteps follow the
first-frame rule even when a regeneration mask is used) and the clean first latent of each CFG branch is written
into the DiT input by a DIFFUSION_MODEL wrapper (`install_first_frames`, shared with the Cosmos adapter), so the
positive and negative branches see their own first frames. Outside a regeneration mask WAN22's inpainting feeds
the model the clean original latent (WAN22.scale_latent_inpaint), as ComfyUI does for every Wan 2.2 5B mask.

Everything runs through ComfyUI: the model is loaded by the sampler machinery (load_models_gpu via
CFGGuider), patched only on `model.clone()` (capture.py), conditioned with ComfyUI's own keys
(`concat_latent_image`, `concat_mask`, `clip_vision_output`, exactly as core WanImageToVideo sets them) and
sampled with `CFGGuider` + Euler, so LoRAs, model patches and the inpainting `denoise_mask` all apply.

Latents in this adapter are in *model space* (ComfyUI's process_latent_in of the VAE latent), where the
flow-matching formula x = (1-sigma) x0 + sigma eps holds.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

import comfy.model_base
import comfy.model_management
import comfy.patcher_extension
import comfy.samplers

from . import schedules, windows
from .capture import DitCapture, StopForward
from ..kernels.datatypes import make_feature_meta, make_features
from .native_batch import BatchRegeneration
from .protocol import FeatureSpec, ImageCond, ProgressFn, check_level

WAN_TEXT_LEN = 512
CLIP_TOKENS, CLIP_DIM = 257, 1280
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
    denoise_mask (1 = regenerate) is ComfyUI's inpainting rule. Returns the model-space result."""
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


def captured_forward(bb, patched, cap, x0: torch.Tensor, level: float, spec: FeatureSpec, seed: int,
                     conds: list) -> dict[str, torch.Tensor]:
    """Install `cap` on `patched` (a clone of bb.model), run one conditional forward pass at `level` on the
    model-space latent x0, record the blocks that ran on bb.last_blocks_run; returns the captures."""
    cap.install(patched)
    conditional_forward(patched, bb.model.model.process_latent_out(x0.float()), bb.sigma_at(level), conds, seed)
    bb.last_blocks_run = list(cap.blocks_run)
    missing = [k for k in spec.keys() if k not in cap.store]
    if missing:
        raise RuntimeError(f"capture: {missing} were not produced by the forward pass")
    return cap.store


def sdedit_sigmas(bb, scheduler: str, level: float, steps: int, guidance: float) -> torch.Tensor:
    """The tail of bb's `scheduler` schedule (ComfyUI's calculate_sigmas) from sigma(level) for an SDEdit."""
    if guidance < 0:
        raise ValueError(f"guidance: {guidance} must be >= 0")
    full = comfy.samplers.calculate_sigmas(bb.model_sampling, scheduler, int(steps)).float()
    return schedules.sdedit_tail(full, level, bb.sigma_at(level))


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


def keep_window(out: dict, key: str, per_frame: torch.Tensor, win, total: int) -> None:
    """Write the frames window `win` keeps of `per_frame` (window-relative frames) into out[key], a
    [total, ...] tensor allocated on first use."""
    if key not in out:
        out[key] = per_frame.new_empty((total,) + tuple(per_frame.shape[1:]))
    out[key][win.keep_start:win.keep_stop] = per_frame[win.keep_start - win.start:win.keep_stop - win.start]


def frames_mask(mask: torch.Tensor, frames: int, size: tuple[int, int]) -> torch.Tensor:
    """A MASK ([H,W], [1,H,W] or [T,H,W]) as [frames, *size] float (one mask is used for every frame)."""
    m = mask.float()
    m = m[None] if m.ndim == 2 else m
    if m.shape[0] == 1 and frames > 1:
        m = m.expand(frames, -1, -1)
    return F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


class _ZeroClipVision:
    """Stands in for a CLIP_VISION_OUTPUT (all-zero image tokens) when an I2V model with CLIP gets none."""

    def __init__(self, device=None):
        self.penultimate_hidden_states = torch.zeros(1, CLIP_TOKENS, CLIP_DIM, device=device)


def is_wan_model(model) -> bool:
    from comfy.ldm.wan.model import WanModel

    base = getattr(model, "model", None)
    return isinstance(base, comfy.model_base.WAN21) and isinstance(getattr(base, "diffusion_model", None), WanModel)


class ComfyWanBackbone(BatchRegeneration):
    family = "wan"
    rope_layout = "interleaved"     # ComfyUI apply_rope1: channel pairs (2i, 2i+1) share a frequency
    temporal_compression = 4
    default_window = 81          # Wan's native clip length (4k+1)
    ti2v = False                 # set per model in _read_dit (subclasses that skip it are not TI2V)
    _expected_model = "a Wan model (WanModel DiT)"
    _needed_vae = "the model needs a {c}-channel Wan VAE"
    _is_model = staticmethod(is_wan_model)
    _capture_class = DitCapture
    _regen_scheduler = "simple"
    _empty_text_len = WAN_TEXT_LEN
    _text_encoder = "the umT5 text encoder for Wan"

    def __init__(self, model, vae, text: Any = None):
        """Reads what every DiT family shares here; the family's own attributes come from _read_dit."""
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
        self.model_sampling = model.get_model_object("model_sampling")
        self._read_sampling()
        self.text = text
        self.name = self._dit_name(base, dm)

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
    def sigma_at(self, level: float) -> float:
        return schedules.flow_sigma(check_level(level), self.shift)

    def timestep_from_level(self, level: float) -> float:
        return 1000.0 * self.sigma_at(level)

    def level_from_timestep(self, t: float) -> float:
        if not (0.0 <= float(t) <= 1000.0):
            raise ValueError(f"timestep: {t} must be in [0, 1000]")
        return schedules.flow_level(float(t) / 1000.0, self.shift)

    def noise_to(self, latents: torch.Tensor, level: float, seed: int) -> torch.Tensor:
        s = self.sigma_at(level)
        eps = schedules.seeded_noise(latents.shape, seed, latents.device, latents.dtype)
        return schedules.flow_noise(latents, eps, s)

    # ---------------------------------------------------------------- VAE
    def model_size(self, h: int, w: int) -> tuple[int, int]:
        """Nearest size the model accepts (multiples of the token stride)."""
        s = self.spatial_stride
        return max(s, int(round(h / s)) * s), max(s, int(round(w / s)) * s)

    def _to_model_size(self, frames: torch.Tensor) -> torch.Tensor:
        return resize_frames(frames, self.model_size(*frames.shape[1:3]))

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

    def _first_latent_extra(self, image: torch.Tensor, length: int, size: tuple[int, int], mask_key: str) -> dict:
        """The model-space latent of `image` as FIRST_LATENT_KEY (written per branch by install_first_frames) and a
        known-frame mask under `mask_key` (0 on that latent frame, 1 on the rest of a `length`-frame clip)."""
        first = self.encode(first_frame(image, size))             # causal VAE: frame 0 alone = latent frame 0
        t = (length - 1) // self.temporal_compression + 1
        mask = torch.ones((1, 1, t, first.shape[-2], first.shape[-1]), device=first.device)
        mask[:, :, : first.shape[2]] = 0.0
        return {mask_key: mask, FIRST_LATENT_KEY: first}

    def _install_first_frames(self, patcher, positive: list, negative: list) -> None:
        install_first_frames(patcher, positive, negative)

    _resize = staticmethod(resize_frames)

    # ---------------------------------------------------------------- one captured forward pass
    def capture_latent(self, x0: torch.Tensor, level: float, spec: FeatureSpec, seed: int,
                       conds: list, stop_early: bool = True) -> dict[str, torch.Tensor]:
        """One conditional forward pass at `level` on the model-space latent x0; returns the raw captures
        (tokens) keyed like "k18". The shared model is untouched (everything is installed on a clone)."""
        self._check_spec(spec)
        m = self.model.clone()
        self._install_first_frames(m, conds, conds)
        cap = self._capture_class(spec, self.num_heads, stop_early=stop_early,
                                 to_device=comfy.model_management.intermediate_device())
        return captured_forward(self, m, cap, x0, level, spec, seed, conds)

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
    def features(self, frames: torch.Tensor, level: float, spec: FeatureSpec, seed: int,
                 cond: Any = None, progress: ProgressFn = None) -> dict[str, dict]:
        level = check_level(level)
        self._check_spec(spec)
        frames = frames[..., :3].float()
        T, H, W = frames.shape[:3]
        x = self._to_model_size(frames)
        mh, mw = x.shape[1:3]
        window = spec.window or self.default_window
        plan = windows.plan_windows(T, window, spec.overlap, quantum=self.temporal_compression)
        image_cond = cond if isinstance(cond, ImageCond) else None
        text = image_cond.text if image_cond is not None else (cond if isinstance(cond, list) else self.text)
        out: dict[str, torch.Tensor] = {}
        grid_hw = (mh // self.spatial_stride, mw // self.spatial_stride)
        for win in plan:
            comfy.model_management.throw_exception_if_processing_interrupted()
            clip = windows.pad_frames(x[win.start:win.stop], win.length)
            x0 = self.encode(clip)
            extra = self._image_extra(image_cond, win.length, (mh, mw), need_image=False)
            raw = self.capture_latent(x0, level, spec, seed, self._conds(text, extra))
            grid = (x0.shape[2],) + grid_hw
            for key in spec.keys():
                per_latent = self._tokens_to_grid(key, raw[key], grid)
                per_frame = windows.latent_time_to_frames(per_latent, win.length, self.temporal_compression)
                keep_window(out, key, per_frame, win, T)
            del raw
            if progress is not None:
                progress()
        stride = (H / grid_hw[0], W / grid_hw[1])
        used_window = windows.quantize_window(window, self.temporal_compression)
        result = {}
        for layer in spec.layers:
            for kind in spec.kinds:
                key = f"{kind}{layer}"
                qk = kind != "block"
                heads = (list(spec.heads) if spec.heads is not None else list(range(self.num_heads))) if qk else None
                meta = make_feature_meta(
                    self.name, kind, family=self.family, layer=layer, heads=heads, noise_level=level,
                    timestep=self.timestep_from_level(level), rope=spec.rope if qk else None,
                    rope_layout=self.rope_layout if qk else None, sigma=self.sigma_at(level),
                    rope_groups=self.rope_groups if qk else None, num_heads=self.num_heads, window=used_window,
                    overlap=spec.overlap, windows=len(plan), seed=int(seed), model_size=(mh, mw))
                result[key] = make_features(out[key], stride, (H, W), meta)
        return result

    # ---------------------------------------------------------------- protocol: regeneration
    def regenerate(self, frames: torch.Tensor, level: float, positive: ImageCond, negative: ImageCond,
                   guidance: float, steps: int, mask: Optional[torch.Tensor] = None, seed: int = 0,
                   progress: ProgressFn = None) -> torch.Tensor:
        level = check_level(level)
        frames = frames[..., :3].float()
        T, H, W = frames.shape[:3]
        x = self._to_model_size(frames)
        mh, mw = x.shape[1:3]
        length = windows.quantize_up(T, self.temporal_compression)
        x0 = self.encode(windows.pad_frames(x, length))
        pos = self._conds(positive.text, self._image_extra(positive, length, (mh, mw), need_image=True))
        neg = self._conds(negative.text, self._image_extra(negative, length, (mh, mw), need_image=True))
        lat_mask = None if mask is None else self._latent_mask(mask, T, (mh, mw), x0.shape[2])
        out = self.regenerate_latent(x0, level, pos, neg, guidance, steps, lat_mask, seed, progress)
        video = self.decode(out)[:T]
        if tuple(video.shape[1:3]) != (H, W):
            video = self._resize(video, (H, W))
        return video.clamp(0, 1)

    def _latent_mask(self, mask: torch.Tensor, frames: int, size: tuple[int, int], latent_frames: int):
        """A video MASK of `frames` frames -> [1,1,t,h,w] on the latent grid (max over each VAE cell)."""
        m = windows.pad_frames(frames_mask(mask, frames, size), windows.quantize_up(frames, self.temporal_compression))
        return windows.mask_to_latent_grid(m, latent_frames, self.temporal_compression, self.vae_stride)

    def regenerate_latent(self, x0: torch.Tensor, level: float, positive: list, negative: list,
                          guidance: float, steps: int, latent_mask: Optional[torch.Tensor] = None,
                          seed: int = 0, progress: ProgressFn = None) -> torch.Tensor:
        """SDEdit on a model-space latent with CONDITIONING lists. Per step v = v_pos + w (v_pos - v_neg):
        ComfyUI's CFG neg + cfg (pos - neg) with cfg = 1 + w (w = 0 runs the positive branch only).
        latent_mask [1,1,t,h,w], 1 = regenerate: outside it ComfyUI's inpainting keeps the noised original at
        each step (the clean original for Wan 2.2 TI2V, WAN22's rule) and the original latent at the end.
        Wan 2.2 TI2V: the known first latent frame is kept (set to the positive image's latent) and each branch
        sees its own first frame."""
        sigmas = sdedit_sigmas(self, self._regen_scheduler, level, steps, guidance)
        if len(sigmas) < 2:
            return x0.clone()
        if not self.ti2v or positive[0][1].get(FIRST_LATENT_KEY) is None:
            return guided_euler(self.model.clone(), x0, sigmas, positive, negative, guidance, latent_mask, seed,
                                progress, item_noise=True)
        return self._first_frame_euler(x0, sigmas, positive, negative, guidance, latent_mask, seed, progress)

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
        self._install_first_frames(m, positive, negative)
        # noise drawn for x0's shape: start has the same shape, the first frame replaced
        return guided_euler(m, start, sigmas, positive, negative, guidance, mask, seed, progress, item_noise=True)

    def regen_steps(self, level: float, steps: int) -> int:
        """Number of sampler steps regenerate() runs (for progress bars)."""
        return schedules.run_steps(check_level(level), int(steps))
