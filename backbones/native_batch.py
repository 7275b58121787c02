"""Batched counterfactual regeneration for the ComfyUI-native DiT adapters (Wan, Cosmos): B generations that
share a clip length and size, each with its own image prompts (and RePaint mask), as ONE sampler call.

ComfyUI batches everything else: the conditioning's concat latents, CLIP image tokens and first-frame latents
carry the batch axis (B items), the text context is repeated, CFG evaluates positive and negative of all B items
together (calc_cond_batch), so the model is read once per step for the whole batch. Every item starts from the
noise of `seed` (the same noise a single `regenerate` with that seed draws), so item b equals a separate
`regenerate` of item b up to float rounding of the batched kernels.
"""
from __future__ import annotations

import weakref
from typing import Optional

import torch

from . import windows
from .protocol import ImageCond, ProgressFn, check_noise_level, check_regen_batch


class BatchedClipVisionOutput:
    """CLIP_VISION_OUTPUT stand-in carrying the image tokens of B images ([B,257,1280]); Wan reads only this."""

    def __init__(self, outputs: list):
        self.penultimate_hidden_states = torch.cat([o.penultimate_hidden_states for o in outputs], 0)


def merge_conds(per_item: list[list]) -> list:
    """B single-item CONDITIONING lists (same entries and keys) -> one batched list: tensors equal for every item
    (masks, the text context) are kept once, the rest concatenated on the batch axis; CLIP vision outputs become
    one BatchedClipVisionOutput."""
    out = []
    for j, (ctx, extra) in enumerate(per_item[0]):
        for p in per_item[1:]:
            if not torch.equal(p[j][0], ctx):
                raise ValueError("conditioning: a batched regeneration needs the same text conditioning for "
                                 "every item")
        merged = {}
        for key, val in extra.items():
            vals = [p[j][1][key] for p in per_item]
            if isinstance(val, torch.Tensor):
                same = all(v.shape == val.shape and torch.equal(v, val) for v in vals)
                merged[key] = val if same else torch.cat(vals, 0)
            elif hasattr(val, "penultimate_hidden_states"):
                merged[key] = BatchedClipVisionOutput(vals)
            else:
                merged[key] = val
        out.append([ctx, merged])
    return out


class BatchRegeneration:
    """Mixin for the native DiT adapters (needs _at_model_size, encode, decode, _conds, _image_extra,
    regenerate_latent, vae_stride, temporal_compression)."""

    _prepared = None     # (weakrefs of frames and prompts, prepared batch) of the last call

    def regenerate_batch(self, frames: torch.Tensor, noise_level: float, positives: list, negatives: list,
                         guidance: float, steps: int, masks: Optional[torch.Tensor] = None, seed: int = 0,
                         progress: ProgressFn = None) -> torch.Tensor:
        """frames [B,T,H,W,3] 0..1, one positive and one negative ImageCond per item, masks [B,T,H,W] (1 =
        regenerate) or None -> [B,T,H,W,3]. One sampler call for the batch (progress once per step). A call
        with the same frames tensor and prompt objects as the previous one (a refinement after the coarse pass)
        reuses its VAE encodings (the tensor must not be modified in between)."""
        noise_level = check_noise_level(noise_level)
        check_regen_batch(frames, positives, negatives)
        B, T, H, W = frames.shape[:4]
        x0, pos, neg, (mh, mw) = self._prepare_batch(frames, positives, negatives)
        lat_mask = None
        if masks is not None:
            lat_mask = torch.cat([self._latent_mask(masks[b], T, (mh, mw), x0.shape[2]) for b in range(B)], 0)
        out = self.regenerate_latent(x0, noise_level, pos, neg, guidance, steps, lat_mask, seed, progress)
        videos = []
        for b in range(B):
            v = self.decode(out[b:b + 1])[:T]
            if tuple(v.shape[1:3]) != (H, W):
                v = self._resize(v, (H, W))
            videos.append(v.clamp(0, 1))
        return torch.stack(videos)

    def regen_batch_steps(self, noise_level: float, steps: int, batch: int) -> int:
        """Progress steps regenerate_batch makes: one sampler run for the whole batch."""
        return self.regen_steps(noise_level, steps)

    def _prepare_batch(self, frames: torch.Tensor, positives: list, negatives: list):
        """(x0 [B,C,t,h,w], batched positive and negative conds, model size), cached for an identical next call."""
        key = [frames] + list(positives) + list(negatives)
        if self._prepared is not None:
            refs, prepared = self._prepared
            if len(refs) == len(key) and all(r() is k for r, k in zip(refs, key)):
                return prepared
        B, T = frames.shape[:2]
        length = windows.quantize_up(T, self.temporal_compression)
        xs = [self._at_model_size(frames[b])[1] for b in range(B)]
        size = tuple(xs[0].shape[1:3])
        x0 = torch.cat([self.encode(windows.pad_frames(x, length)) for x in xs], 0)
        encoded: dict[int, list] = {}

        def conds(c: ImageCond) -> list:
            if id(c) not in encoded:                 # a prompt shared by items is encoded once
                encoded[id(c)] = self._conds(c.text, self._image_extra(c, length, size, need_image=True))
            return encoded[id(c)]
        pos = merge_conds([conds(c) for c in positives])
        neg = merge_conds([conds(c) for c in negatives])
        prepared = (x0, pos, neg, size)
        self._prepared = ([weakref.ref(k) for k in key], prepared)
        return prepared
