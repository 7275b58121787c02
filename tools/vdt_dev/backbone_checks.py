"""Shared pieces of the ComfyUI-native adapter tests: one cfg-1 model call through ComfyUI's own sampler machinery,
a hand-written Euler reference, "the shared model is left unchanged" checks and first-frame inputs."""
from __future__ import annotations

import pytest
import torch

import comfy.patcher_extension
import comfy.samplers

from vdtrack.backbones import schedules
from vdtrack.backbones.native_common import install_first_frames
from vdtrack.backbones.protocol import ImageCond


# ---------------------------------------------------------------- one model call
def one_call(patched, noise, latent, sigma, conds, seed=None, denoise_mask=None) -> dict:
    """One cfg-1 call of `patched` at sigma through CFGGuider and a one-step KSAMPLER: {"x": what the sampler was
    given, "den": ComfyUI's denoised prediction}."""
    res = {}

    def one(model, x, sigmas, extra_args=None, callback=None, disable=None):
        res["x"] = x.clone()
        res["den"] = model(x, sigmas[0] * x.new_ones([x.shape[0]]), **extra_args)
        return x

    g = comfy.samplers.CFGGuider(patched)
    g.set_conds(conds, conds)
    g.set_cfg(1.0)
    g.sample(noise, latent, comfy.samplers.KSAMPLER(one), torch.tensor([sigma, 0.0]), denoise_mask=denoise_mask,
             disable_pbar=True, seed=seed)
    return res


def denoised(patcher, x0, sigma, conds, seed=0, capture=None, model_input=None, first_frames=False) -> dict:
    """one_call on a clone of `patcher` at sigma for x = noise_to(x0) (model-space x0, seeded noise); the clone can
    carry the adapter's first-frame wrapper, a capture, and a wrapper appending the diffusion model's input to
    `model_input`."""
    m = patcher.clone()
    if first_frames:
        install_first_frames(m, conds, conds)
    if capture is not None:
        capture.install(m)
    if model_input is not None:
        def grab(executor, x, *args, **kwargs):
            model_input.append(x.clone())
            return executor(x, *args, **kwargs)
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test", grab)
    noise = schedules.seeded_noise(x0.shape, seed)
    return one_call(m, noise, patcher.model.process_latent_out(x0), sigma, conds, seed=seed)


def denoised_at(patcher, x, s, conds, seed=0, first_frames=False) -> torch.Tensor:
    """Denoised prediction for an already-noised sampler-space x: with an all-zero latent ComfyUI's own noise
    scaling gives (1-s)*0 + s*(x/s) = x (flow) or 0 + s*(x/s) = x (EDM)."""
    m = patcher.clone()
    if first_frames:
        install_first_frames(m, conds, conds)
    return one_call(m, x / s, torch.zeros_like(x), s, conds, seed=seed)["den"]


# ---------------------------------------------------------------- hand-written Euler reference
def sdedit_sigmas(bb, scheduler: str, steps: int, noise_level: float) -> torch.Tensor:
    full = comfy.samplers.calculate_sigmas(bb.model_sampling, scheduler, steps).float()
    return schedules.sdedit_tail(full, noise_level, bb.sigma_at(noise_level))


def guided(dp: torch.Tensor, negative, w: float) -> torch.Tensor:
    """den = den_pos + w (den_pos - den_neg); `negative()` is only called for w != 0."""
    return dp if w == 0 else dp + w * (dp - negative())


def euler(x: torch.Tensor, sig: torch.Tensor, den_at) -> torch.Tensor:
    """Plain Euler along sig on the sampler's own x with den_at(x, s) the denoised prediction."""
    for i in range(len(sig) - 1):
        s, s_next = float(sig[i]), float(sig[i + 1])
        den = den_at(x, s)
        x = x + (s_next - s) * (x - den) / s
    return x


def assert_flow_noise(bb, t_of) -> None:
    """noise_to is (1-t) x0 + t eps with t = t_of(noise_level): std t on a zero latent, mean 2 (1-t) on a latent
    of 2s."""
    z = torch.zeros(1, 16, 8, 32, 32)
    for noise_level in (0.2, 0.7):
        t = t_of(noise_level)
        assert bb.noise_to(z, noise_level, seed=3).std().item() == pytest.approx(t, rel=0.02)
        c = torch.full_like(z, 2.0)
        assert bb.noise_to(c, noise_level, seed=3).mean().item() == pytest.approx(2.0 * (1 - t), abs=0.01 * t + 1e-3)


# ---------------------------------------------------------------- the shared model is left unchanged
def model_state(patcher):
    """(state dict copy, hook count, transformer_options keys, patches_replace, wrappers) of a shared model."""
    dm = patcher.model.diffusion_model
    sd = {k: v.clone() for k, v in dm.state_dict().items()}
    hooks = sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) for mod in dm.modules())
    to = patcher.model_options.get("transformer_options", {})
    wrappers = {k: len(v) for k, v in patcher.wrappers.items() if v}
    return sd, hooks, repr(sorted(to.keys())), repr(to.get("patches_replace", {})), repr(wrappers)


def assert_unchanged(before, after) -> None:
    assert before[1:] == after[1:] and before[1] == 0
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])


def assert_capture_read_only(patcher, x0, sigma, conds, cap, **kwargs) -> None:
    """The denoised prediction with `cap` installed equals the one without it (a capture only reads)."""
    plain = denoised(patcher, x0, sigma, conds, **kwargs)["den"]
    hooked = denoised(patcher, x0, sigma, conds, capture=cap, **kwargs)["den"]
    assert torch.equal(plain, hooked)


def assert_repeatable(bb, clip, noise_level, spec, seed, **kwargs) -> None:
    """Two feature runs with the same inputs give the same tensors."""
    f1 = bb.features(clip, noise_level, spec, seed=seed, **kwargs)
    f2 = bb.features(clip, noise_level, spec, seed=seed, **kwargs)
    for k in f1:
        assert torch.equal(f1[k]["features"], f2[k]["features"])


def counting_blocks(patcher, n: int, calls: list):
    """A clone whose DiT blocks 0..n-1 append their index to `calls` (patches_replace, as ComfyUI offers)."""
    counted = patcher.clone()
    for i in range(n):
        counted.set_model_patch_replace(
            lambda args, extra, i=i: (calls.append(i), extra["original_block"](args))[1], "dit", "double_block", i)
    return counted


def assert_stops_early(bb, clip, calls: list, cases) -> None:
    """features() for each (spec, blocks) of `cases` runs exactly `blocks` (`calls` is filled by the counting)."""
    for i, (spec, blocks) in enumerate(cases):
        if i:
            calls.clear()
        bb.features(clip, 0.5, spec, seed=0)
        assert calls == blocks


# ---------------------------------------------------------------- inputs
def red_square(image: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """A copy of `image` [1,H,W,3] with a red square at rows/columns lo:hi (an edited first frame)."""
    out = image.clone()
    out[0, lo:hi, lo:hi] = torch.tensor([1.0, 0.0, 0.0])
    return out


def first_frame_conds(bb, clip: torch.Tensor, edited: torch.Tensor):
    """(x0, positive, negative): the clip's model-space latent and the conditioning on the edited / the original
    first frame, built by the adapter as its regeneration does."""
    n, size = clip.shape[0], tuple(clip.shape[1:3])
    with torch.inference_mode():          # module-scoped fixtures run outside the tests' inference mode
        x0 = bb.encode(clip)
        pos = bb._conds(None, bb._image_extra(ImageCond(edited), n, size, need_image=True))
        neg = bb._conds(None, bb._image_extra(ImageCond(clip[:1]), n, size, need_image=True))
    return x0, pos, neg


def centre_latent_mask(x0: torch.Tensor) -> torch.Tensor:
    """[1,1,t,h,w] regeneration mask that is 1 on latent cells 1:3 x 1:3 of every frame."""
    mask = torch.zeros(1, 1, x0.shape[2], x0.shape[3], x0.shape[4])
    mask[..., 1:3, 1:3] = 1.0
    return mask
