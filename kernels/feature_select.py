"""Head and RoPE-frequency selection of per-head q/k features, plus a spatial low-pass (HeFT,
arXiv 2512.04619; docs/methods.md §3).

RoPE bands: a head's C channels are three rotary groups (T, H, W) of sizes `rope_dims`, laid out contiguously.
Inside a group the frequency index grows with the channel index (theta_i = base^(-2i/d): low index = high
frequency), so keeping [a, b) of each group with a > 0 drops the highest-frequency bands. Layouts:
  'contiguous': keep channels [int(D*a), int(D*b)) of each group of size D (HeFT's slicing, applied by the
                official code to Cosmos' half-split layout too).
  'interleaved' (Wan / ComfyUI): channel pairs (2i, 2i+1) of a group share frequency i; keep the whole pairs of
                frequencies [int(F*a), int(F*b)), F = D/2.
  'half_split' (Cosmos / diffusers use_real_unbind_dim=-2): the head is split in halves; channel i and i + C/2
                share frequency i; the groups occupy D/2 channels of each half; keep frequencies
                [int(F*a), int(F*b)) of each group in both halves.
"Frequency" here is the rotary band, not a spatial frequency; `spatial_lowpass` is the separate spatial option.
"""
from __future__ import annotations

import torch

LAYOUTS = ("contiguous", "interleaved", "half_split")


def parse_head_ids(spec) -> list[int] | None:
    """Head ids of the model, as text or values: '6' / '1,3,5' (commas, semicolons or spaces) / int / list ->
    [ids] in the given order; '' / 'all' / '*' / '-1' / -1 -> None (every head). Syntax only (the ids are checked
    against a model or features where they are used); ValueError naming `heads` for anything else, a negative id,
    an empty selection or a repeated id."""
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("", "all", "-1", "*"):
            return None
        try:
            out = [int(p) for p in text.replace(";", ",").replace(" ", ",").split(",") if p]
        except ValueError:
            raise ValueError(f"heads: expected a head index, a comma list like '1,3,5', or 'all', got {spec!r}") \
                from None
    elif isinstance(spec, int) and not isinstance(spec, bool):
        out = None if spec == -1 else [spec]
    elif isinstance(spec, (list, tuple)):
        out = [int(v) for v in spec]
    else:
        raise ValueError(f"heads: expected a string, an int or a list, got {type(spec).__name__}")
    if out is not None and not out:
        raise ValueError("heads: no head selected")
    if out is not None and any(v < 0 for v in out):
        raise ValueError(f"heads: head ids are 0 or more, got {spec!r}")
    if out is not None and len(set(out)) != len(out):
        raise ValueError(f"heads: repeated head in {out}")
    return out


def parse_heads(spec, heads: int) -> list[int]:
    """'6' / '1,3,5' / 'all' / int / list -> list of head indices (validated against `heads`)."""
    out = parse_head_ids(spec)
    if out is None:
        return list(range(heads))
    bad = [v for v in out if not 0 <= v < heads]
    if bad:
        raise ValueError(f"heads: {bad} out of range, the features have heads 0..{heads - 1}")
    return out


def head_positions(spec, head_ids) -> list[int]:
    """Requested ORIGINAL head ids ('6' / '1,3,5' / 'all' / int / list) -> their positions along the heads axis
    of features that hold the heads `head_ids` (VDT_FEATURES meta["heads"]), in the requested order."""
    ids = [int(h) for h in head_ids]
    out = parse_head_ids(spec)
    if out is None:
        return list(range(len(ids)))
    missing = [h for h in out if h not in ids]
    if missing:
        raise ValueError(f"heads: {missing} not among the heads these features hold {ids}")
    return [ids.index(h) for h in out]


def rope_band_indices(channels: int, rope_dims, freq_range, layout: str = "contiguous") -> torch.Tensor:
    """Channel indices (sorted, long) kept by the RoPE band selection of one head with `channels` channels."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
    try:
        dims = [int(d) for d in rope_dims]
    except (TypeError, ValueError):
        raise ValueError(f"rope_dims: expected three integers (T,H,W), got {rope_dims!r}") from None
    if len(dims) != 3 or min(dims) < 0:
        raise ValueError(f"rope_dims: expected three non-negative integers (T,H,W), got {rope_dims!r}")
    if sum(dims) != channels:
        raise ValueError(f"rope_dims: {dims} sum to {sum(dims)} but a head has {channels} channels")
    a, b = (float(v) for v in freq_range)
    if not 0.0 <= a < b <= 1.0:
        raise ValueError(f"freq_range: expected 0 <= low < high <= 1, got ({a}, {b})")
    if layout != "contiguous" and any(d % 2 for d in dims):
        raise ValueError(f"rope_dims: the {layout} layout needs even group sizes, got {dims}")
    keep: list[int] = []
    start = 0
    for d in dims:
        if layout == "contiguous":
            keep += range(start + int(d * a), start + int(d * b))
            start += d
        elif layout == "interleaved":
            f = d // 2
            for i in range(int(f * a), int(f * b)):
                keep += (start + 2 * i, start + 2 * i + 1)
            start += d
        else:   # half_split: groups of d/2 in each half
            f = d // 2
            for i in range(int(f * a), int(f * b)):
                keep += (start + i, channels // 2 + start + i)
            start += f
    if not keep:
        raise ValueError(f"freq_range: ({a}, {b}) keeps no channel of rope_dims {dims}")
    return torch.tensor(sorted(keep), dtype=torch.long)


def select_heads_frequencies(features: torch.Tensor, heads="all", rope_dims=None, freq_range=(0.0, 1.0),
                             layout: str = "contiguous") -> torch.Tensor:
    """[T,heads,C,h,w] -> [T,C',h,w]: band selection inside each selected head, heads concatenated in order.
    rope_dims None = no band selection."""
    if not isinstance(features, torch.Tensor) or features.ndim != 5:
        raise ValueError(f"features: expected per-head features [T,heads,C,h,w], got "
                         f"{tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__}")
    t, nh, c, h, w = features.shape
    idx_heads = parse_heads(heads, nh)
    x = features[:, idx_heads]
    if rope_dims is not None:
        x = x.index_select(2, rope_band_indices(c, rope_dims, freq_range, layout).to(features.device))
    return x.reshape(t, -1, h, w)


def spatial_lowpass(features: torch.Tensor, keep: float) -> torch.Tensor:
    """Keep the spatial frequencies with |f_y|, |f_x| <= keep * Nyquist (0.5 cycles/cell) of every map [..., h, w];
    keep = 1 returns the input unchanged."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"spatial_lowpass: expected a fraction in (0, 1], got {keep}")
    if keep >= 1.0:
        return features
    h, w = features.shape[-2:]
    spec = torch.fft.rfft2(features.to(torch.float64) if features.dtype == torch.float64 else features.float())
    fy = torch.fft.fftfreq(h, device=features.device).abs()
    fx = torch.fft.rfftfreq(w, device=features.device).abs()
    mask = (fy[:, None] <= keep * 0.5 + 1e-9) & (fx[None, :] <= keep * 0.5 + 1e-9)
    return torch.fft.irfft2(spec * mask, s=(h, w)).to(features.dtype)
