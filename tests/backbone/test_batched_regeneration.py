"""Batched counterfactual regeneration (Point Prompting, several points per sampler call) on the tiny models:
K generations in one batch equal K separate generations with the same seed; guidance 0 is plain conditional
sampling; outside a RePaint mask the latents are untouched, item by item."""
from __future__ import annotations

import pytest
import torch

from vdtrack.backbones.comfy_cosmos import ComfyCosmosBackbone
from vdtrack.backbones.comfy_wan import ComfyWanBackbone
from vdtrack.backbones.native_batch import BatchedClipVisionOutput, merge_conds
from vdtrack.backbones.protocol import ImageCond

from vdt_dev.backbone_checks import red_square
from .conftest import synthetic_clip


def marked(clip, k):
    """k different edited first frames (a red square at a different place each) and the batch of clips."""
    firsts = [red_square(clip[:1], 2 + 6 * i, 6 + 6 * i) for i in range(k)]
    frames = torch.stack([torch.cat([f, clip[1:]], 0) for f in firsts])
    return firsts, frames


def masks_for(k, t, h, w):
    m = torch.zeros(k, t, h, w)
    for i in range(k):
        m[i, :, 4 * i:4 * i + 12, 8:24] = 1.0
    return m


@pytest.mark.parametrize("with_mask", [False, True])
def test_batch_equals_separate_generations(wan_i2v, wan_vae, with_mask):
    bb = ComfyWanBackbone(wan_i2v, wan_vae)
    clip = synthetic_clip(9, 32, 32, seed=3)
    firsts, frames = marked(clip, 3)
    pos = [ImageCond(f) for f in firsts]
    neg = [ImageCond(clip[:1])] * 3
    masks = masks_for(3, 9, 32, 32) if with_mask else None
    ticks = []
    out = bb.regenerate_batch(frames, 0.5, pos, neg, 3.0, 6, masks=masks, seed=7, progress=lambda: ticks.append(1))
    assert out.shape == (3, 9, 32, 32, 3) and len(ticks) == bb.regen_steps(0.5, 6)
    for b in range(3):
        one = bb.regenerate(frames[b], 0.5, pos[b], neg[b], 3.0, 6, mask=None if masks is None else masks[b],
                            seed=7)
        assert torch.allclose(out[b], one, atol=2e-4), (b, (out[b] - one).abs().max())
    assert (out[0] - out[1]).abs().max() > 1e-3             # the items really differ


def test_batch_with_clip_image_tokens(wan_i2v_clip, wan_vae):
    """Wan 2.1 I2V layout: each item's CLIP image tokens travel on the batch axis."""
    bb = ComfyWanBackbone(wan_i2v_clip, wan_vae)
    clip = synthetic_clip(5, 32, 32, seed=1)
    firsts, frames = marked(clip, 2)
    g = torch.Generator().manual_seed(0)

    class CVO:
        def __init__(self):
            self.penultimate_hidden_states = torch.randn(1, 257, 1280, generator=g) * 0.1
    pos = [ImageCond(f, CVO()) for f in firsts]
    neg = [ImageCond(clip[:1], CVO())] * 2
    out = bb.regenerate_batch(frames, 0.5, pos, neg, 2.0, 4, seed=1)
    for b in range(2):
        assert torch.allclose(out[b], bb.regenerate(frames[b], 0.5, pos[b], neg[b], 2.0, 4, seed=1), atol=2e-4)


def test_batch_on_cosmos(cosmos, wan_vae):
    bb = ComfyCosmosBackbone(cosmos, wan_vae)
    clip = synthetic_clip(5, 32, 32, seed=4)
    firsts, frames = marked(clip, 2)
    pos = [ImageCond(f) for f in firsts]
    neg = [ImageCond(clip[:1])] * 2
    out = bb.regenerate_batch(frames, 0.5, pos, neg, 2.0, 4, masks=masks_for(2, 5, 32, 32), seed=2)
    for b in range(2):
        one = bb.regenerate(frames[b], 0.5, pos[b], neg[b], 2.0, 4, mask=masks_for(2, 5, 32, 32)[b], seed=2)
        assert torch.allclose(out[b], one, atol=2e-4)


def _batched_latents(bb, clip, k):
    firsts, frames = marked(clip, k)
    n, size = clip.shape[0], tuple(clip.shape[1:3])
    x0 = torch.cat([bb.encode(f) for f in frames], 0)
    pos = merge_conds([bb._conds(None, bb._image_extra(ImageCond(f), n, size, need_image=True)) for f in firsts])
    neg1 = bb._conds(None, bb._image_extra(ImageCond(clip[:1]), n, size, need_image=True))
    return x0, pos, merge_conds([neg1] * k), firsts


def test_guidance_zero_is_plain_conditional_sampling_in_a_batch(wan_i2v, wan_vae):
    """w = 0: the batch never looks at the negative prompts and each item equals its single-item conditional
    sampling (itself checked against a hand-written Euler in test_comfy_wan.py)."""
    bb = ComfyWanBackbone(wan_i2v, wan_vae)
    clip = synthetic_clip(9, 32, 32, seed=2)
    x0, pos, neg, firsts = _batched_latents(bb, clip, 3)
    assert pos[0][1]["concat_latent_image"].shape[0] == 3 and neg[0][1]["concat_latent_image"].shape[0] == 1
    out = bb.regenerate_latent(x0, 0.5, pos, neg, 0.0, 8, seed=4)
    assert torch.equal(out, bb.regenerate_latent(x0, 0.5, pos, pos, 0.0, 8, seed=4))
    n, size = clip.shape[0], tuple(clip.shape[1:3])
    for b in range(3):
        p1 = bb._conds(None, bb._image_extra(ImageCond(firsts[b]), n, size, need_image=True))
        one = bb.regenerate_latent(x0[b:b + 1], 0.5, p1, p1, 0.0, 8, seed=4)
        assert torch.allclose(out[b:b + 1], one, atol=1e-4)


def test_refinement_mask_leaves_latents_outside_untouched(wan_i2v, wan_vae):
    bb = ComfyWanBackbone(wan_i2v, wan_vae)
    clip = synthetic_clip(9, 32, 32, seed=5)
    x0, pos, neg, _ = _batched_latents(bb, clip, 2)
    mask = torch.zeros(2, 1, *x0.shape[2:])
    mask[0, ..., 0:1, 0:1] = 1.0
    mask[1, ..., 1:2, 0:2] = 1.0
    out = bb.regenerate_latent(x0, 0.3, pos, neg, 8.0, 10, latent_mask=mask, seed=0)
    assert ((out - x0) * (1 - mask)).abs().max() < 1e-5
    for b in range(2):
        assert ((out[b] - x0[b]) * mask[b]).abs().max() > 1e-3


def test_merge_conds_and_validation(wan_i2v, wan_vae):
    a = [[torch.zeros(1, 4, 8), {"m": torch.ones(1, 2), "img": torch.zeros(1, 3), "o": 5}]]
    b = [[torch.zeros(1, 4, 8), {"m": torch.ones(1, 2), "img": torch.ones(1, 3), "o": 5}]]
    m = merge_conds([a, b])
    assert m[0][1]["m"].shape == (1, 2) and m[0][1]["img"].shape == (2, 3) and m[0][1]["o"] == 5

    class C:
        def __init__(self, v):
            self.penultimate_hidden_states = torch.full((1, 2, 3), v)
    m = merge_conds([[[torch.zeros(1, 1), {"clip_vision_output": C(0.0)}]],
                     [[torch.zeros(1, 1), {"clip_vision_output": C(1.0)}]]])
    assert isinstance(m[0][1]["clip_vision_output"], BatchedClipVisionOutput)
    assert m[0][1]["clip_vision_output"].penultimate_hidden_states.shape == (2, 2, 3)
    with pytest.raises(ValueError, match="conditioning"):
        merge_conds([a, [[torch.ones(1, 4, 8), a[0][1]]]])
    bb = ComfyWanBackbone(wan_i2v, wan_vae)
    clip = synthetic_clip(5, 32, 32)
    with pytest.raises(ValueError, match="frames"):
        bb.regenerate_batch(clip, 0.5, [ImageCond(clip[:1])], [ImageCond(clip[:1])], 1.0, 4)
