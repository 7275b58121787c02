"""Read-only capture of DiT block outputs and self-attention q/k through ComfyUI's own patch points.

Installed on a `ModelPatcher.clone()` only (the shared model and its module are never touched):
- `patches_replace["dit"][("double_block", i)]` wraps block i: it records the block output, marks which
  block is running (so the attention override knows the layer) and, at the deepest requested layer,
  raises `StopForward` so the rest of the network is skipped.
- `transformer_options["optimized_attention_override"]` sees every attention call with the q/k the
  kernel receives: in Wan that is after QK-norm and after RoPE. The first call inside a block is its
  self-attention. That order is ComfyUI's (self- before cross-attention in WanAttentionBlock.forward), so it is
  checked on every capture: the q and k taken must have as many tokens as the block's video input, else a
  RuntimeError says ComfyUI's block internals changed (instead of silently capturing the cross-attention).
  "Before RoPE" q/k are recovered exactly by applying the inverse rotation (RoPE is an
  orthogonal 2x2 rotation per channel pair), using the rotary table the block received.
Patches already present on the model (other packs) are chained, not replaced.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .protocol import FeatureSpec


class StopForward(Exception):
    """Raised after the deepest requested capture; caught by the caller around the model call."""


def inverse_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Undo ComfyUI's apply_rope1: x [b,s,n,d] rotated with freqs [...,d/2,2,2] -> the unrotated tensor."""
    ft = freqs.transpose(-1, -2)
    x_ = x.to(ft.dtype).reshape(*x.shape[:-1], -1, 1, 2)
    out = ft[..., 0] * x_[..., 0] + ft[..., 1] * x_[..., 1]
    return out.reshape(*x.shape)


class DitCapture:
    """Collects raw token tensors: store["block{i}"] [b, L, dim], store["q{i}"] / ["k{i}"] [b, L, heads_kept, d]."""

    def __init__(self, spec: FeatureSpec, num_heads: int, stop_early: bool = True,
                 to_device: Optional[torch.device] = None):
        self.spec = spec
        self.num_heads = num_heads
        self.stop_early = stop_early
        self.to_device = to_device
        self.store: dict[str, torch.Tensor] = {}
        self.blocks_run: list[int] = []
        self._layer: Optional[int] = None
        self._attn_calls = 0
        self._pe = None
        self._tokens: Optional[int] = None      # video tokens of the running block (None: not known)
        self.deepest = max(spec.layers)
        self._wants_qk = any(k in spec.kinds for k in ("q", "k"))

    # ---------------------------------------------------------------- installation on a clone
    def install(self, patcher) -> None:
        to = patcher.model_options.setdefault("transformer_options", {})
        dit = to.get("patches_replace", {}).get("dit", {})
        for i in sorted(set(self.spec.layers)):
            patcher.set_model_patch_replace(self._block_patch(i, dit.get(("double_block", i))),
                                            "dit", "double_block", i)
        if self._wants_qk:
            to = patcher.model_options["transformer_options"]
            to["optimized_attention_override"] = self._attention_override(to.get("optimized_attention_override"))

    def _block_patch(self, i: int, previous: Optional[Callable]):
        def patch(args, extra):
            self.blocks_run.append(i)
            self._layer, self._attn_calls, self._pe = i, 0, args.get("pe")
            self._tokens = int(args["img"].shape[1])
            try:
                out = previous(args, extra) if previous is not None else extra["original_block"](args)
            finally:
                self._layer, self._pe, self._tokens = None, None, None
            if "block" in self.spec.kinds:
                self._put(f"block{i}", out["img"])
            if self.stop_early and i == self.deepest:
                raise StopForward()
            return out
        return patch

    def _attention_override(self, previous: Optional[Callable]):
        def override(func, *args, **kwargs):
            layer = self._layer
            if layer is not None and self._attn_calls == 0:
                self._attn_calls += 1
                self._take_qk(layer, args[0], args[1], kwargs)
                if (self.stop_early and layer == self.deepest and "block" not in self.spec.kinds):
                    raise StopForward()      # q/k of the deepest layer are all we need
            elif layer is not None:
                self._attn_calls += 1
            if previous is not None:
                return previous(func, *args, **kwargs)
            return func(*args, **kwargs)
        return override

    # ---------------------------------------------------------------- storage
    def _check_self_attention(self, layer: int, q: torch.Tensor, k: torch.Tensor, token_axis: int) -> None:
        """The attention call taken as block `layer`'s self-attention must attend video tokens to video tokens."""
        if self._tokens is None:
            return
        got = (int(q.shape[token_axis]), int(k.shape[token_axis]))
        if got != (self._tokens, self._tokens):
            raise RuntimeError(
                f"capture: the attention call taken as block {layer}'s self-attention has q/k with {got[0]}/{got[1]} "
                f"tokens, expected the block's {self._tokens} video tokens; ComfyUI's block internals changed "
                f"order, so this capture would read the wrong tensor (update backbones/capture.py)")

    def _take_qk(self, layer: int, q: torch.Tensor, k: torch.Tensor, kwargs: dict) -> None:
        heads = kwargs.get("heads", self.num_heads)
        self._check_self_attention(layer, q, k, 2 if kwargs.get("skip_reshape", False) else 1)
        for kind, t in (("q", q), ("k", k)):
            if kind not in self.spec.kinds:
                continue
            if kwargs.get("skip_reshape", False):          # [b, n, s, d] layout
                t = t.transpose(1, 2)
            else:                                          # [b, s, n*d]
                t = t.reshape(t.shape[0], t.shape[1], heads, -1)
            if self.spec.rope == "before":
                if self._pe is None:
                    raise ValueError("rope: 'before' needs the rotary table of the block (not available here)")
                t = inverse_rope(t, self._pe)
            if self.spec.heads is not None:
                bad = [h for h in self.spec.heads if not (0 <= h < heads)]
                if bad:
                    raise ValueError(f"heads: {bad} outside 0..{heads - 1}")
                t = t[:, :, self.spec.heads]
            self._put(f"{kind}{layer}", t)

    def _put(self, key: str, t: torch.Tensor) -> None:
        t = t.detach()
        if self.to_device is not None:
            t = t.to(self.to_device)
        self.store[key] = t.float()
