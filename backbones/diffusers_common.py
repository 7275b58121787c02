"""Loading diffusers components offline, and what every diffusers adapter shares.

Sources (always local_files_only, safetensors only, never a hub id):
- a folder (ComfyUI models/diffusers/<name>/) with model_index.json and one subfolder per component,
  or a bare component folder (config.json + diffusion_pytorch_model*.safetensors);
- a single .safetensors file (diffusers key layout) + the config shipped in backbones/configs/<family>/.

The model objects are owned by the adapter (not ComfyUI's shared modules), so forward hooks on them are fine;
`Capture` removes them in `finally` and can stop the forward pass after the deepest requested layer. Their
memory is ComfyUI's to manage: each module sits in a ModelPatcher and is loaded with load_models_gpu
(DiffusersBackbone).
"""
from __future__ import annotations

import abc
import math
import os
import re
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import comfy.model_management

from .capture import StopForward
from .diffusers_files import (build_on_meta, check_component, check_model_index, check_scheduler_config,
                              check_single_file, failed_load, read_json, release_after_failure)
from ..kernels.datatypes import make_feature_meta, make_features
from .protocol import BackboneBase, check_noise_level, nearest_multiple_size
from .schedules import ddpm_noise, ddpm_timestep, sdedit_tail
from .windows import latent_time_to_frames, pad_frames, plan_anchor_chunks, run_windows, video_mask_to_latent

CONFIG_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
FAMILIES = ("i2vgen", "svd", "cogvideox", "wan")
# known prefixes of single files that hold one denoiser in diffusers key layout
_PREFIXES = ("model.diffusion_model.", "unet.", "transformer.", "model.")

# CLIP image normalisation (OpenAI CLIP / OpenCLIP ViT-H use these), used when the folder has no
# feature_extractor/preprocessor_config.json
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def shipped_config_dir(family: str, component: str = "") -> str:
    d = os.path.join(CONFIG_ROOT, family, component) if component else os.path.join(CONFIG_ROOT, family)
    if not os.path.isfile(os.path.join(d, "config.json")):
        raise ValueError(f"family: no shipped config for '{family}' {component} ({d})")
    return d


def component_dir(root: str, component: str) -> Optional[str]:
    """The folder holding `component` inside a diffusers layout, or None."""
    d = os.path.join(root, component)
    return d if os.path.isfile(os.path.join(d, "config.json")) else None


def _weights_variant(folder: str) -> Optional[str]:
    """None for plain weights files, "fp16" for diffusion_pytorch_model.fp16.safetensors or for shards listed in
    diffusion_pytorch_model.safetensors.index.fp16.json (diffusers' variant names), etc."""
    names = set(os.listdir(folder))
    for base in ("diffusion_pytorch_model", "model"):
        if f"{base}.safetensors" in names or f"{base}.safetensors.index.json" in names:
            return None
    for pattern in (r"(?:diffusion_pytorch_model|model)\.safetensors\.index\.([A-Za-z0-9_]+)\.json",   # sharded
                    r"(?:diffusion_pytorch_model|model)\.([A-Za-z0-9_]+)\.safetensors"):
        for n in sorted(names):
            m = re.fullmatch(pattern, n)
            if m:
                return m.group(1)
    if any(n.endswith((".bin", ".ckpt", ".pt", ".pth")) for n in names):
        raise ValueError(f"model: {folder} holds pickle weights only; vdtrack loads safetensors only")
    raise ValueError(f"model: no safetensors weights in {folder}")


def load_from_folder(cls, folder: str, dtype: torch.dtype):
    """cls.from_pretrained on a local component folder (safetensors, local files only), after
    diffusers_files.check_component (config, memory estimate, weights headers and names checked first)."""
    variant = _weights_variant(folder)
    check_component(cls, folder, variant, dtype)
    return cls.from_pretrained(folder, local_files_only=True, use_safetensors=True, torch_dtype=dtype,
                               variant=variant).eval()


def _strip_prefix(sd: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    if set(sd) & expected:
        return sd
    for p in _PREFIXES:
        cut = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
        if cut and set(cut) & expected:
            return cut
    return sd


def load_from_single_file(cls, file: str, config_dir: str, dtype: torch.dtype):
    """Build cls from config_dir/config.json and load a diffusers-layout .safetensors strictly. The file's header
    is checked against the model (built on the meta device first) before any tensor is read."""
    if not file.endswith(".safetensors"):
        raise ValueError(f"model: '{os.path.basename(file)}' is not a .safetensors file")
    try:
        check_single_file(build_on_meta(cls, config_dir), file, dtype, _strip_prefix)
    except ValueError as e:
        raise ValueError(f"{e}. Single files must be in diffusers key layout; files in the original layout "
                         f"load natively in ComfyUI.") from None
    model = cls.from_config(cls.load_config(config_dir))
    model.load_state_dict(_strip_prefix(load_file(file), set(model.state_dict())), strict=True)
    return model.to(dtype).eval()


def load_denoiser(cls, source: str, component: str, family: str, dtype: torch.dtype, config_dir: str = ""):
    """The family's denoiser from a folder (model_index layout or bare component) or a single file."""
    if os.path.isdir(source):
        folder = component_dir(source, component) or (source if os.path.isfile(os.path.join(source, "config.json"))
                                                      else None)
        if folder is None:
            raise ValueError(f"model: '{source}' has neither {component}/config.json nor config.json")
        return load_from_folder(cls, folder, dtype)
    if os.path.isfile(source):
        return load_from_single_file(cls, source, config_dir or shipped_config_dir(family, component), dtype)
    raise ValueError(f"model: '{source}' does not exist")


def load_optional(cls, source: str, component: str, dtype: torch.dtype):
    """A companion component (vae, image_encoder, ...) from a diffusers folder, or None if absent."""
    if not os.path.isdir(source):
        return None
    folder = component_dir(source, component)
    return None if folder is None else load_from_folder(cls, folder, dtype)


def load_vae(cls, source: str, vae_file: str, family: str, dtype: torch.dtype):
    """The VAE: `vae/` inside the model folder, else a separate single file + shipped vae config."""
    vae = load_optional(cls, source, "vae", dtype)
    if vae is None and vae_file:
        if os.path.isdir(vae_file):
            vae = load_denoiser(cls, vae_file, "vae", family, dtype)
        else:
            vae = load_from_single_file(cls, vae_file, shipped_config_dir(family, "vae"), dtype)
    if vae is None:
        raise ValueError(f"vae: '{os.path.basename(source)}' has no vae/ folder; choose a VAE file or folder")
    return vae


def scheduler_config(source: str, family: str) -> dict:
    """scheduler/scheduler_config.json of the folder, else the one shipped for the family."""
    for d in ((os.path.join(source, "scheduler") if os.path.isdir(source) else ""),
              os.path.join(CONFIG_ROOT, family, "scheduler")):
        f = os.path.join(d, "scheduler_config.json") if d else ""
        if f and os.path.isfile(f):
            return check_scheduler_config(f)
    raise ValueError(f"family: no scheduler config for '{family}'")


def clip_normalisation(source: str) -> tuple[tuple, tuple]:
    f = os.path.join(source, "feature_extractor", "preprocessor_config.json") if os.path.isdir(source) else ""
    if f and os.path.isfile(f):
        c = read_json(f)
        out = tuple(c.get("image_mean", CLIP_MEAN)), tuple(c.get("image_std", CLIP_STD))
        if not all(len(v) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                                       for x in v) for v in out) or not all(x > 0 for x in out[1]):
            raise ValueError(f"model: feature_extractor/preprocessor_config.json: image_mean / image_std must be "
                             f"3 finite numbers each (std > 0), got {str(out)[:80]}")
        return out
    return CLIP_MEAN, CLIP_STD


# ------------------------------------------------------------------ pixels
def to_pixels(frames: torch.Tensor, multiple: int) -> torch.Tensor:
    """IMAGE [T,H,W,3] 0..1 -> [T,3,H',W'] in [-1,1] with H',W' the nearest multiples of `multiple`
    (a feature grid over the resized frame spans the whole input frame: stride = H/h)."""
    T, H, W, _ = frames.shape
    h2, w2 = nearest_multiple_size(H, W, multiple)
    x = frames.permute(0, 3, 1, 2).float()
    if (h2, w2) != (H, W):
        x = F.interpolate(x, size=(h2, w2), mode="bilinear", align_corners=False, antialias=True)
    return x * 2.0 - 1.0


def from_pixels(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[T,3,H',W'] in [-1,1] -> IMAGE [T,H,W,3] 0..1 at `size`."""
    x = ((x.float() + 1.0) / 2.0).clamp(0, 1)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    return x.permute(0, 2, 3, 1).contiguous()


def cond_image(cond, size: tuple[int, int]) -> torch.Tensor:
    """ImageCond (or a bare IMAGE) -> IMAGE [1,H,W,3] resized to the clip's frame size."""
    img = getattr(cond, "image", cond)
    if not isinstance(img, torch.Tensor):
        raise ValueError("positive/negative: expected an ImageCond or an IMAGE tensor")
    img = img if img.ndim == 4 else img.unsqueeze(0)
    if img.ndim != 4 or img.shape[-1] != 3:
        raise ValueError(f"positive/negative: image must be [1,H,W,3], got {list(img.shape)}")
    img = img[:1].float()
    if tuple(img.shape[1:3]) != tuple(size):
        img = F.interpolate(img.permute(0, 3, 1, 2), size=tuple(size), mode="bilinear", align_corners=False,
                            antialias=True).permute(0, 2, 3, 1)
    return img


def clip_pixels(image: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """[B,3,H,W] in [-1,1] -> CLIP input [B,3,size,size] (resize, no crop, as the SVD pipeline)."""
    x = F.interpolate((image.float() + 1) / 2, size=(size, size), mode="bicubic", align_corners=False,
                      antialias=True).clamp(0, 1)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


# ------------------------------------------------------------------ capture
class RestoreProcessor:
    """Puts an attention module's original processor back (used as a Capture handle)."""

    def __init__(self, attn, processor):
        self.attn, self.processor = attn, processor

    def remove(self) -> None:
        self.attn.processor = self.processor


class Capture:
    """Forward hooks that store tensors by key and stop the forward (capture.StopForward) once all `wanted` keys
    are in.

    Use as a context manager; hooks are removed on exit whatever happens."""

    def __init__(self, wanted: list[str]):
        self.wanted = set(wanted)
        self.store: dict[str, torch.Tensor] = {}
        self.handles = []

    def put(self, key: str, value: torch.Tensor) -> None:
        if key in self.wanted:
            self.store[key] = value.detach()
            if self.wanted <= set(self.store):
                raise StopForward()

    def on_output(self, module: torch.nn.Module, key: str, pick: Callable = lambda o: o) -> None:
        self.handles.append(module.register_forward_hook(lambda m, a, o: self.put(key, pick(o))))

    def run(self, fn: Callable[[], object]) -> dict[str, torch.Tensor]:
        try:
            fn()
        except StopForward:
            pass
        missing = self.wanted - set(self.store)
        if missing:
            raise RuntimeError(f"features: layers {sorted(missing)} were not reached by the forward pass")
        return self.store

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()
        return False


def check_layers(spec_layers, num_layers: int, what: str = "layer") -> None:
    bad = [i for i in spec_layers if not (0 <= i < num_layers)]
    if bad:
        raise ValueError(f"{what}: {bad} out of range 0..{num_layers - 1}")


def load_text_encoder(source: str, dtype: torch.dtype) -> Optional[tuple]:
    """(tokenizer, encoder) from the folder's tokenizer/ and text_encoder/ (transformers, local files; the class
    model_index.json names, checked like every component by load_from_folder), or None when the folder has
    none of them."""
    enc_dir = component_dir(source, "text_encoder") if os.path.isdir(source) else None
    tok_dir = os.path.join(source, "tokenizer") if os.path.isdir(source) else ""
    if enc_dir is None or not os.path.isdir(tok_dir):
        return None
    import transformers

    entry = check_model_index(source).get("text_encoder") or [None, "AutoModel"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    return tokenizer, load_from_folder(getattr(transformers, entry[1]), enc_dir, dtype)



def masked_guided_euler(clean: torch.Tensor, noise: torch.Tensor, sigmas, denoise: Callable, renoise: Callable,
                        guidance: float, mask: Optional[torch.Tensor] = None,
                        progress: Optional[Callable[[], None]] = None) -> torch.Tensor:
    """Euler SDEdit along `sigmas` for sigma-parameterised families (EDM SVD, flow Wan) with image-prompt
    guidance and a RePaint mask. `denoise(x, sigma, branch)` predicts the clean latent for branch "pos"/"neg";
    the guided prediction is d_pos + w (d_pos - d_neg) (the same as guiding the velocity for flow models).
    `renoise(clean, noise, sigma)` is the family's forward noising. Outside `mask` (1 = regenerate) the latent
    is replaced by the noised original before every step and by the original at the end."""
    x = renoise(clean, noise, float(sigmas[0]))
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        if mask is not None:
            x = mask * x + (1 - mask) * renoise(clean, noise, s)
        d = denoise(x, s, "pos")
        if guidance != 0:
            d = d + guidance * (d - denoise(x, s, "neg"))
        if mask is not None:
            d = mask * d + (1 - mask) * clean
        x = x + (s_next - s) * (x - d) / s
        if progress is not None:
            progress()
    if mask is not None:
        x = mask * x + (1 - mask) * clean
    return x

class _Held(torch.nn.Module):
    """Holds one diffusers / transformers module for a ComfyUI ModelPatcher: the patcher records the current device
    in `model.device`, which diffusers' ModelMixin exposes as a read-only property."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        super().__init__()
        self.inner = module
        self.device = device


class DiffusersBackbone(BackboneBase, abc.ABC):
    """What the diffusers adapters share: memory management through ComfyUI, the window loop of `features`, the
    frame of `regenerate`, packaging.

    Every torch module of the adapter (`_modules`) is wrapped in a comfy.model_patcher.ModelPatcher (load_device =
    ComfyUI's torch device, offload_device = its UNet offload device) and loaded with
    comfy.model_management.load_models_gpu before each use, so ComfyUI frees room for it, offloads it when its
    own models need the memory and counts it like its own models (force_full_load: diffusers layers cannot run
    with weights left on the offload device).

    Subclasses set the protocol attributes and implement `_encode_pixels` / `_decode_pixels` (VAE on pixels in
    [-1,1]), `_window_features` (one forward pass over one window of frames -> {key: tensor [t_latent, ...]})
    and `_regenerate`."""

    family = ""
    rope_layout: Optional[str] = None    # channel layout of the RoPE pairs in q/k, where the adapter knows it
    latent_frames_per_video_frame_causal = False   # causal temporal VAE (frame 0 alone)
    pixel_multiple = 64                             # frames are resized to multiples of this

    def __init__(self, source: str, device=None, dtype=torch.float32, offload_device=None):
        self.source = source
        self.device = torch.device(device) if device is not None else comfy.model_management.get_torch_device()
        self.offload_device = (torch.device(offload_device) if offload_device is not None
                               else comfy.model_management.unet_offload_device())
        self.dtype = dtype
        self._patchers: Optional[list] = None
        self._text_encoder: Optional[tuple] = None     # (tokenizer, ModelPatcher of the encoder), made on first use
        self._prompts: dict[str, torch.Tensor] = {}

    # ---- memory: ComfyUI's model management loads and offloads the modules
    @abc.abstractmethod
    def _modules(self) -> list[torch.nn.Module]:
        """The torch modules of this adapter (denoiser, VAE, image encoder)."""

    def patchers(self) -> list:
        """One ModelPatcher per module (made on first use, kept for the adapter's life)."""
        if self._patchers is None:
            import comfy.model_patcher

            self._patchers = [comfy.model_patcher.ModelPatcher(_Held(m, self.offload_device), self.device,
                                                               self.offload_device) for m in self._modules()]
        return self._patchers

    def _load(self) -> None:
        """Ask ComfyUI to load every module onto self.device (freeing or offloading other models as needed)."""
        comfy.model_management.load_models_gpu(self.patchers(), force_full_load=True)

    # ---- text: the folder's text encoder, a ModelPatcher that ComfyUI loads when it encodes a new prompt
    def prompt_embeddings(self, prompt: str, max_length: int, fallback_shape: tuple[int, int]) -> torch.Tensor:
        """Embeddings [1, max_length, D] of `prompt` on self.device in self.dtype, encoded once per prompt by the
        folder's text encoder (tokens padded/truncated to max_length); zeros of [1, *fallback_shape] for the
        empty prompt of a folder without text_encoder/ + tokenizer/ (ValueError naming positive/negative for any
        other prompt there). The encoder is a comfy.model_patcher.ModelPatcher (load_device = self.device,
        offload_device = self.offload_device) loaded with comfy.model_management.load_models_gpu, so ComfyUI
        frees room for it and offloads or unloads it like its own text encoders. Encoder precision: self.dtype,
        fp32 where that is fp16 (T5 overflows in fp16; our choice)."""
        if prompt not in self._prompts:
            self._prompts[prompt] = self._encode_prompt(prompt, max_length, fallback_shape)
        return self._prompts[prompt].to(self.device, self.dtype)

    @torch.no_grad()
    def _encode_prompt(self, prompt: str, max_length: int, fallback_shape: tuple[int, int]) -> torch.Tensor:
        if self._text_encoder is None:
            loaded = load_text_encoder(self.source, torch.float32 if self.dtype == torch.float16 else self.dtype)
            if loaded is None:
                if prompt.strip():
                    raise ValueError(f"positive/negative: the prompt {prompt[:40]!r} needs a text_encoder/ and "
                                     f"tokenizer/ in the model folder; without them only the empty prompt (zeros) "
                                     f"is available")
                return torch.zeros((1,) + tuple(fallback_shape), device=self.device, dtype=self.dtype)
            from comfy.model_patcher import ModelPatcher

            tokenizer, encoder = loaded
            self._text_encoder = (tokenizer, ModelPatcher(_Held(encoder, self.offload_device), self.device,
                                                          self.offload_device))
        tokenizer, patcher = self._text_encoder
        comfy.model_management.load_models_gpu([patcher], force_full_load=True)
        ids = tokenizer([prompt], padding="max_length", max_length=max_length, truncation=True,
                        return_tensors="pt").input_ids
        return patcher.model.inner(ids.to(self.device))[0].to(self.device, self.dtype)

    # ---- VAE
    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        self._load()
        return self._encode_pixels(to_pixels(frames.to(self.device), self.pixel_multiple))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, size=None) -> torch.Tensor:
        self._load()
        x = self._decode_pixels(latents)
        return from_pixels(x, size or tuple(x.shape[-2:]))

    # ---- regeneration: validation and loading here, the family's sampler in _regenerate
    @abc.abstractmethod
    def _regenerate(self, frames: torch.Tensor, noise_level: float, positive, negative, guidance: float, steps: int,
                    mask: Optional[torch.Tensor], seed: int, progress) -> torch.Tensor:
        """Guided SDEdit of frames [T,H,W,3] (on self.device) -> IMAGE [T,H,W,3] 0..1."""

    @torch.no_grad()
    def regenerate(self, frames, noise_level, positive, negative, guidance, steps, mask=None, seed=0, progress=None):
        noise_level = check_noise_level(noise_level)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"images: expected [T,H,W,3], got {list(frames.shape)}")
        self.regen_steps(noise_level, steps)                # validates steps
        if float(guidance) < 0:
            raise ValueError(f"guidance: {guidance} must be >= 0")
        self._load()
        return self._regenerate(frames.to(self.device).float(), noise_level, positive, negative, float(guidance),
                                int(steps), mask, int(seed), progress)

    # ---- features
    @abc.abstractmethod
    def _window_features(self, frames: torch.Tensor, noise_level: float, spec, seed: int, cond) -> dict:
        """One forward pass over one window of frames -> {key: tensor [t_latent, ...]}."""

    def _latent_to_video(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Per-latent-frame tensor -> per-video-frame tensor (identity without temporal compression)."""
        if self.temporal_compression == 1:
            return x[:num_frames]
        return latent_time_to_frames(x, num_frames, self.temporal_compression,
                                     self.latent_frames_per_video_frame_causal)

    def _feature_meta(self, noise_level: float, spec, layer: int, kind: str) -> dict:
        qk = kind != "block"
        heads = (list(spec.heads) if spec.heads is not None else list(range(self.num_heads))) if qk else None
        return make_feature_meta(os.path.basename(self.source.rstrip("/")), kind, family=self.family, layer=layer,
                                 heads=heads, noise_level=noise_level,
                                 timestep=self.timestep_from_noise_level(noise_level),
                                 rope=spec.rope if qk else None, rope_layout=self.rope_layout if qk else None)

    @torch.no_grad()
    def features(self, frames, noise_level, spec, seed, cond=None, progress=None) -> dict:
        noise_level = check_noise_level(noise_level)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"image: expected [T,H,W,3], got {list(frames.shape)}")
        check_layers(spec.layers, self.num_layers)
        if spec.chunking == "anchor":
            return self._anchor_features(frames, noise_level, spec, seed, cond, progress)
        T, H, W, _ = frames.shape
        plan = self.window_plan(T, spec)

        keep_on = comfy.model_management.intermediate_device()

        def one_window(w) -> dict[str, torch.Tensor]:
            self._load()                                # ComfyUI may have offloaded them since the last window
            clip = pad_frames(frames[w.start:w.stop], w.length).to(self.device)
            got = self._window_features(clip, noise_level, spec, seed + w.start, cond)
            return {k: self._latent_to_video(got[k].float(), w.length).to(keep_on) for k in spec.keys()}

        feats = run_windows(plan, T, one_window, progress,
                            comfy.model_management.throw_exception_if_processing_interrupted)
        out = {}
        for layer in spec.layers:
            for kind in spec.kinds:
                k, x = f"{kind}{layer}", feats[f"{kind}{layer}"]
                meta = self._feature_meta(noise_level, spec, layer, kind)
                meta.update(window=spec.window or self.default_window, overlap=spec.overlap, windows=len(plan),
                            seed=int(seed))
                out[k] = make_features(x, (H / x.shape[-2], W / x.shape[-1]), (H, W), meta)   # grid spans the frame
        return out

    def _anchor_features(self, frames, noise_level, spec, seed, cond, progress) -> dict:
        """DiffTrack's published passes (cvlab-kaist/DiffTrack evaluate_tapvid.py): frame 0 plus the strided frames
        of each chunk (windows.plan_anchor_chunks, `window` frames per pass incl. frame 0; 13 by default). Per-frame
        features come from the first pass holding the frame; "anchor_passes" keeps every pass [(frames [n] long,
        features [n+1,...] with frame 0 first)] for the DiffTrack kernel (track_difftrack(anchor_passes=...))."""
        if self.temporal_compression != 1:
            raise ValueError("chunking: 'anchor' needs one latent frame per video frame (CogVideoX with "
                             "frame_as_latent); use 'windows' for this model")
        T, H, W, _ = frames.shape
        chunk_len = spec.window or self.default_window
        chunks = plan_anchor_chunks(T, chunk_len)
        if not chunks:                                        # a one-frame clip: one pass of frame 0
            chunks = [[]]
        per_frame: dict[str, torch.Tensor] = {}
        passes: dict[str, list] = {k: [] for k in spec.keys()}
        strides: dict[str, tuple[float, float]] = {}
        done: set[int] = set()
        keep_on = comfy.model_management.intermediate_device()
        for chunk in chunks:
            comfy.model_management.throw_exception_if_processing_interrupted()
            self._load()                                # ComfyUI may have offloaded them since the last pass
            idx = [0] + chunk
            got = self._window_features(frames[idx].to(self.device), noise_level, spec, seed, cond)
            first = [i for i, t in enumerate(idx) if t not in done]       # frames no earlier pass held
            for k in passes:
                x = self._latent_to_video(got[k].float(), len(idx))[: len(idx)].to(keep_on)
                passes[k].append((torch.tensor(chunk, dtype=torch.long), x))
                if k not in per_frame:
                    per_frame[k] = x.new_zeros(T, *x.shape[1:])
                per_frame[k][[idx[i] for i in first]] = x[first]
                h, wd = got[k].shape[-2:]
                strides[k] = (H / h, W / wd)
            done.update(idx)
            if progress is not None:
                progress()
        out = {}
        for layer in spec.layers:
            for kind in spec.kinds:
                k = f"{kind}{layer}"
                meta = self._feature_meta(noise_level, spec, layer, kind)
                meta.update(window=chunk_len, chunking="anchor", windows=len(chunks), seed=int(seed))
                out[k] = make_features(per_frame[k], strides[k], (H, W), meta)
                out[k]["anchor_passes"] = passes[k] if chunks != [[]] else []
        return out


# ------------------------------------------------------------------ DDPM v-prediction (I2VGen-XL, CogVideoX)
def ddpm_alphas_cumprod(scheduler_cls, config: dict) -> torch.Tensor:
    """alphas_cumprod exactly as the family's diffusers scheduler builds it (betas, zero-SNR, SNR shift)."""
    return scheduler_cls.from_config(config).alphas_cumprod.double()


def vpred_ddim_sdedit(x0_latent: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, noise_level: float,
                      steps: int, predict_v: Callable[[torch.Tensor, int, str], torch.Tensor], guidance: float,
                      mask: Optional[torch.Tensor] = None, progress=None) -> torch.Tensor:
    """SDEdit with DDIM (eta 0) for a v-prediction model: start at ddpm_timestep(noise_level) from the latent
    noise_to makes, run the last run_steps(noise_level, steps) steps of a `steps`-step schedule down to clean.
    predict_v(x, t, which) with which in ("pos", "neg"); v = v_pos + w (v_pos - v_neg).
    mask (broadcastable to x, 1 = regenerate): outside it x is reset to the noised original each step."""
    n_train = len(alphas_cumprod)
    t0 = ddpm_timestep(noise_level, n_train)
    full = torch.linspace(n_train - 1, 0, steps + 1)
    ts = [int(round(float(t))) for t in sdedit_tail(full, noise_level, t0)]
    a = lambda t: float(alphas_cumprod[t])                     # noqa: E731
    x = ddpm_noise(x0_latent, noise, a(t0))
    for i in range(len(ts) - 1):
        t = ts[i]
        at, an = a(t), (a(ts[i + 1]) if i + 2 < len(ts) else 1.0)   # the last step lands on the clean latent
        if mask is not None:
            x = mask * x + (1 - mask) * ddpm_noise(x0_latent, noise, at)
        v_pos = predict_v(x, t, "pos")
        v = v_pos if guidance == 0 else v_pos + guidance * (v_pos - predict_v(x, t, "neg"))
        x0 = at ** 0.5 * x - (1 - at) ** 0.5 * v
        eps = (1 - at) ** 0.5 * x + at ** 0.5 * v
        if mask is not None:
            x0 = mask * x0 + (1 - mask) * x0_latent
        x = an ** 0.5 * x0 + (1 - an) ** 0.5 * eps
        if progress is not None:
            progress()
    if mask is not None:
        x = mask * x + (1 - mask) * x0_latent
    return x


def latent_mask(mask: Optional[torch.Tensor], num_frames: int, pixel_size: tuple[int, int],
                spatial: int) -> Optional[torch.Tensor]:
    """MASK (1 = regenerate) of a clip without temporal compression -> [1,1,T,h,w] on the latent grid of frames
    resized to `pixel_size` (`spatial` pixels per latent cell), by windows.video_mask_to_latent (the rule every
    adapter uses: max over each cell, soft values kept). None stays None."""
    if mask is None:
        return None
    return video_mask_to_latent(mask, num_frames, pixel_size, num_frames, 1, spatial, causal_first=False)


# ------------------------------------------------------------------ family dispatch
_PIPELINE_FAMILY = {"I2VGenXLPipeline": "i2vgen", "StableVideoDiffusionPipeline": "svd",
                    "CogVideoXPipeline": "cogvideox", "WanPipeline": "wan", "WanImageToVideoPipeline": "wan"}
_ADAPTERS = {"i2vgen": ("diffusers_i2vgen", "I2VGenBackbone"), "svd": ("diffusers_svd", "SVDBackbone"),
             "cogvideox": ("diffusers_cogvideox", "CogVideoXBackbone"), "wan": ("diffusers_wan", "DiffusersWanBackbone")}


def detect_family(source: str) -> Optional[str]:
    """The family named by a folder's model_index.json pipeline class, or None. The file is checked
    (diffusers_files.check_model_index): a malformed one raises ValueError naming it."""
    f = os.path.join(source, "model_index.json")
    if not os.path.isfile(f):
        return None
    return _PIPELINE_FAMILY.get(check_model_index(source)["_class_name"])


def load_backbone(source: str, family: str = "auto", dtype=torch.float32, vae_file: str = "", **kw):
    """Load a diffusers backbone of `family` ("auto": from the folder's model_index.json). Every failure is a
    ValueError naming the input and the file, raised after the half-loaded modules are released
    (diffusers_files.failed_load / release_after_failure)."""
    import importlib

    if os.path.isdir(source) and os.path.isfile(os.path.join(source, "model_index.json")):
        check_model_index(source)
    if family == "auto":
        family = detect_family(source) if os.path.isdir(source) else None
        if family is None:
            raise ValueError(f"family: cannot tell the family of '{os.path.basename(source)}'; choose it")
    if family not in _ADAPTERS:
        raise ValueError(f"family: '{family}' not in {sorted(_ADAPTERS)}")
    module, cls = _ADAPTERS[family]
    adapter = getattr(importlib.import_module(f".{module}", __package__), cls)
    try:
        return adapter.load(source, dtype=dtype, vae_file=vae_file, **kw)
    except comfy.model_management.InterruptProcessingException:
        message = None
    except Exception as e:         # noqa: BLE001 - every load failure becomes the node's error, resources freed
        message = failed_load(source, e)
    # here, outside the except block: the failure's traceback (which holds the half-built modules) is gone
    release_after_failure()
    if message is None:
        raise comfy.model_management.InterruptProcessingException()
    raise ValueError(message)
