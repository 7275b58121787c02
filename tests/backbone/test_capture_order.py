"""The native q/k capture takes "the first attention call of block i" (Wan) or "attention call 2i" (Cosmos) as block
i's self-attention. If ComfyUI's block internals ever change that order, the capture must fail loudly (the
token-count check) instead of silently returning the cross-attention's q/k. Simulated here by running a
cross-attention call before the block's own forward, on the real tiny models."""
from __future__ import annotations

import pytest
import torch

from vdtrack.backbones.comfy_cosmos import ComfyCosmosBackbone
from vdtrack.backbones.comfy_wan import ComfyWanBackbone
from vdtrack.backbones.protocol import FeatureSpec

from .conftest import synthetic_clip


def _wan_cross_first(monkeypatch):
    from comfy.ldm.wan.model import WanAttentionBlock

    original = WanAttentionBlock.forward

    def reordered(self, x, e, freqs, context, context_img_len=257, transformer_options={}):
        self.cross_attn(self.norm3(x), context, context_img_len=context_img_len,
                        transformer_options=transformer_options)
        return original(self, x, e, freqs, context, context_img_len=context_img_len,
                        transformer_options=transformer_options)

    monkeypatch.setattr(WanAttentionBlock, "forward", reordered)


def _cosmos_cross_first(monkeypatch):
    from comfy.ldm.cosmos.predict2 import Block

    original = Block.forward

    def reordered(self, x_B_T_H_W_D, emb_B_T_D, crossattn_emb, rope_emb_L_1_1_D=None, adaln_lora_B_T_3D=None,
                  extra_per_block_pos_emb=None, transformer_options={}):
        self.cross_attn(x_B_T_H_W_D.flatten(1, 3), crossattn_emb, rope_emb=rope_emb_L_1_1_D,
                        transformer_options=transformer_options)
        return original(self, x_B_T_H_W_D, emb_B_T_D, crossattn_emb, rope_emb_L_1_1_D, adaln_lora_B_T_3D,
                        extra_per_block_pos_emb, transformer_options)

    monkeypatch.setattr(Block, "forward", reordered)


@pytest.mark.parametrize("kind", ["k", "q"])
def test_wan_capture_refuses_a_cross_attention_in_first_place(wan_t2v, wan_vae, monkeypatch, kind):
    bb = ComfyWanBackbone(wan_t2v, wan_vae)
    clip = synthetic_clip(5, 32, 48)
    spec = FeatureSpec([1], kinds=(kind,))
    good = bb.features(clip, 0.3, spec, seed=0)[f"{kind}1"]["features"]       # control: today's order works
    assert torch.isfinite(good).all()
    _wan_cross_first(monkeypatch)
    with pytest.raises(RuntimeError, match="block 1's self-attention.*internals changed"):
        bb.features(clip, 0.3, spec, seed=0)


@pytest.mark.parametrize("rope", ["after", "before"])
def test_cosmos_capture_refuses_a_cross_attention_in_first_place(cosmos, wan_vae, monkeypatch, rope):
    bb = ComfyCosmosBackbone(cosmos, wan_vae)
    clip = synthetic_clip(5, 32, 48)
    spec = FeatureSpec([1], kinds=("k",), rope=rope)
    good = bb.features(clip, 0.3, spec, seed=0)["k1"]["features"]
    assert torch.isfinite(good).all()
    _cosmos_cross_first(monkeypatch)
    with pytest.raises(RuntimeError, match="self-attention.*internals changed"):
        bb.features(clip, 0.3, spec, seed=0)
