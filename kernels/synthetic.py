"""Seeded procedural test clips with exact ground-truth point tracks, visibility, object masks and labels.

Textured objects (discs, rectangles, ellipses) move over a slowly panning textured background: straight lines
that bounce off the borders (an object may poke out of the frame by up to 60% of its radius), some rotate.
Objects have a fixed depth order (later = nearer). Textures are periodic band-limited noise sampled bilinearly
at the exact local coordinate of every pixel centre, and object edges are anti-aliased analytically from a
signed distance, so a tracker can be judged at sub-pixel accuracy.

Ground truth: a point on object k is a fixed local (texture) coordinate `uv`; its image position at frame t is
`c_k(t) + R(theta_k(t)) uv`. A background point is a fixed background texture coordinate `g`; its image
position is `g - pan(t)`. A point is occluded when a nearer object covers it (hard shape test) or its
position leaves the frame [-0.5, W-0.5] x [-0.5, H-0.5].

Optional extras (off by default; drawn from a second random stream, so a seed's default clip never changes):
textureless objects (flat colour: only shape and motion identify them) and small coloured dots riding on objects
or on the background (half of them pure red), so that a painted Point Prompting marker is in the distribution of
clips a model is trained on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from .color import hsv_to_rgb
from .datatypes import inside_frame, make_tracks

TEX = 64   # texels per side of every periodic texture
SHAPES = ("disc", "rect", "ellipse")


@dataclass
class SyntheticClip:
    video: torch.Tensor              # float32 [T,H,W,3] in 0..1
    track_path: torch.Tensor         # float32 [T,N,2] (x,y) pixels
    track_visibility: torch.Tensor   # bool [T,N]
    query_points: torch.Tensor       # float32 [N,3] (t,x,y) at each track's first visible frame
    object_ids: torch.Tensor         # int64 [N], -1 = background
    masks: torch.Tensor              # float32 [T,K,H,W] visible (soft) part of each object
    labels: torch.Tensor             # int64 [T,H,W], 0 = background, k+1 = object k
    dot_coverage: Optional[torch.Tensor] = None   # float32 [T,H,W] visible coverage of the riding dots (0..1)

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self.video.shape[1]), int(self.video.shape[2])

    def tracks(self) -> dict:
        """The ground truth as a TRACKS dict (with query_points and frame_size)."""
        return make_tracks(self.track_path, self.track_visibility, query_points=self.query_points,
                           frame_size=self.frame_size)


@dataclass
class _Object:
    shape: str
    half: tuple[float, float]     # radius (disc: both equal) or half sizes / semi axes, pixels
    center: np.ndarray            # float64 [T,2]
    angle: np.ndarray             # float64 [T] radians
    texture: int                  # index into the texture list
    texel: float                  # pixels per texel


# ----------------------------------------------------------------------------------------------- textures

def _noise_texture(rng: np.random.Generator, base: np.ndarray, contrast: float, feature: float) -> np.ndarray:
    """Periodic band-limited colour noise [3,TEX,TEX]: white noise filtered in Fourier space (1/f falloff and a
    Gaussian cutoff at `feature` texels), mixed into colour around `base`."""
    noise = rng.standard_normal((3, TEX, TEX))
    fy = np.fft.fftfreq(TEX)[:, None]
    fx = np.fft.rfftfreq(TEX)[None, :]
    f = np.sqrt(fx ** 2 + fy ** 2)
    filt = np.exp(-0.5 * (f * feature) ** 2) / np.maximum(f, 1.0 / TEX)
    filt[0, 0] = 0.0
    tex = np.fft.irfft2(np.fft.rfft2(noise) * filt, s=(TEX, TEX))
    tex = (tex - tex.mean(axis=(1, 2), keepdims=True)) / (tex.std(axis=(1, 2), keepdims=True) + 1e-12)
    mix = rng.uniform(-1.0, 1.0, (3, 3)) + 1.2 * np.eye(3)
    tex = np.einsum("ij,jhw->ihw", mix / np.linalg.norm(mix, axis=1, keepdims=True), tex)
    return np.clip(base[:, None, None] + contrast * tex, 0.02, 0.98)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return hsv_to_rgb(torch.tensor([h, s, v], dtype=torch.float64)).numpy()


def _sample(tex: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of a periodic texture [3,S,S] at texel coords a (x) and b (y) -> [..., 3] float32.
    The texture is wrapped by one texel so grid_sample (align_corners=True) interpolates across the seam."""
    s = tex.shape[-1]
    wrapped = torch.cat([tex, tex[:, :1]], dim=1)
    wrapped = torch.cat([wrapped, wrapped[:, :, :1]], dim=2).float()[None]
    ga = torch.remainder(a, s) * (2.0 / s) - 1.0
    gb = torch.remainder(b, s) * (2.0 / s) - 1.0
    grid = torch.stack([ga, gb], dim=-1).reshape(1, 1, -1, 2).float()
    out = torch.nn.functional.grid_sample(wrapped, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, :, 0].T.reshape(*a.shape, 3)


# ----------------------------------------------------------------------------------------------- geometry

def _signed_distance(shape: str, half, u, v):
    """Signed distance (pixels, negative inside) of local coords to the shape outline. Works on numpy or torch."""
    lib = torch if isinstance(u, torch.Tensor) else np
    a, b = half
    if shape == "disc":
        return lib.sqrt(u * u + v * v) - a
    if shape == "rect":
        dx, dy = abs(u) - a, abs(v) - b
        out = lib.sqrt(lib.clip(dx, 0, None) ** 2 + lib.clip(dy, 0, None) ** 2)
        return out + lib.clip(lib.maximum(dx, dy), None, 0)
    # ellipse: first-order distance estimate, exact on the outline, accurate within a few pixels of it
    k0 = lib.sqrt((u / a) ** 2 + (v / b) ** 2)
    k1 = lib.sqrt((u / a ** 2) ** 2 + (v / b ** 2) ** 2)
    return k0 * (k0 - 1.0) / (k1 + 1e-12)


def _bounce(start: float, velocity: float, lo: float, hi: float, t: np.ndarray) -> np.ndarray:
    """Position moving at constant speed that reflects off [lo, hi]."""
    span = hi - lo
    if span <= 0:
        return np.full(t.shape, (lo + hi) / 2)
    m = np.mod(start - lo + velocity * t, 2 * span)
    return lo + np.where(m <= span, m, 2 * span - m)


def _bound_radius(shape: str, half) -> float:
    return half[0] if shape == "disc" else (math.hypot(*half) if shape == "rect" else max(half))


def _to_local(obj: _Object, t: np.ndarray, x, y):
    """Image coords x, y of shape [T,...] (frame on the first axis) -> object local coords."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    cx, cy, ang = obj.center[t, 0], obj.center[t, 1], obj.angle[t]
    if isinstance(x, torch.Tensor):
        cx, cy, ang = (torch.from_numpy(np.ascontiguousarray(a)).to(x.dtype) for a in (cx, cy, ang))
        ca, sa = torch.cos(ang), torch.sin(ang)
    else:
        ca, sa = np.cos(ang), np.sin(ang)
    dx, dy = x - cx.reshape(shape), y - cy.reshape(shape)
    ca, sa = ca.reshape(shape), sa.reshape(shape)
    return ca * dx + sa * dy, -sa * dx + ca * dy


def _to_image(obj: _Object, uv: np.ndarray) -> np.ndarray:
    """Local coords [N,2] -> image positions [T,N,2] (float64)."""
    ca, sa = np.cos(obj.angle)[:, None], np.sin(obj.angle)[:, None]
    x = obj.center[:, 0:1] + ca * uv[None, :, 0] - sa * uv[None, :, 1]
    y = obj.center[:, 1:2] + sa * uv[None, :, 0] + ca * uv[None, :, 1]
    return np.stack([x, y], axis=-1)


# ----------------------------------------------------------------------------------------------- scene

def _random_object(rng, h: int, w: int, t: np.ndarray, rotation: bool, texture: int, scale: float) -> _Object:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    r = rng.uniform(0.10, 0.19) * min(h, w)
    if shape == "disc":
        half = (r, r)
    else:
        aspect = rng.uniform(0.55, 0.9)
        half = (r, r * aspect) if rng.random() < 0.5 else (r * aspect, r)
    rb = _bound_radius(shape, half)
    lo_x, hi_x = 0.4 * rb - 0.5, w - 0.5 - 0.4 * rb
    lo_y, hi_y = 0.4 * rb - 0.5, h - 0.5 - 0.4 * rb
    speed = rng.uniform(0.6, 2.2) * scale
    heading = rng.uniform(0, 2 * np.pi)
    x0, y0 = rng.uniform(lo_x + rb * 0.6, hi_x - rb * 0.6), rng.uniform(lo_y + rb * 0.6, hi_y - rb * 0.6)
    cx = _bounce(x0, speed * np.cos(heading), lo_x, hi_x, t)
    cy = _bounce(y0, speed * np.sin(heading), lo_y, hi_y, t)
    ang0 = rng.uniform(0, 2 * np.pi)
    spin = rng.uniform(0.6, 2.5) * rng.choice([-1, 1]) * np.pi / 180 if (rotation and rng.random() < 0.6) else 0.0
    return _Object(shape, half, np.stack([cx, cy], -1), ang0 + spin * t, texture,
                   scale * rng.uniform(0.85, 1.25))


def _identical_pair(h: int, w: int, t: np.ndarray, frames: int, texture: int, scale: float) -> list[_Object]:
    """Two identical rectangles (same size and texture, no rotation) crossing paths: A left->right (behind),
    B right->left (in front), slightly apart vertically so B covers part of A while they pass."""
    r = 0.14 * min(h, w)
    u = t / max(frames - 1, 1)
    xa = (0.2 + 0.6 * u) * (w - 1)
    xb = (0.8 - 0.6 * u) * (w - 1)
    ya = np.full_like(u, 0.5 * (h - 1) - 0.07 * h)
    yb = np.full_like(u, 0.5 * (h - 1) + 0.07 * h)
    zero = np.zeros_like(u)
    return [_Object("rect", (r, 0.75 * r), np.stack([xa, ya], -1), zero.copy(), texture, scale),
            _Object("rect", (r, 0.75 * r), np.stack([xb, yb], -1), zero.copy(), texture, scale)]


@dataclass
class _Dot:
    center: tuple[float, float]   # local (object) or background texture coordinate, pixels
    radius: float                 # pixels
    color: np.ndarray             # RGB 0..1


def _random_dots(rng, n: int, spot, scale: float, radius=(1.2, 2.6)) -> list[_Dot]:
    """n dots at positions spot(rng) -> (x, y), radius uniform in `radius` (px at 128 px); half of them pure red,
    the rest saturated random hues."""
    out = []
    for _ in range(n):
        col = np.array([1.0, 0.0, 0.0]) if rng.random() < 0.5 else _hsv(rng.uniform(0.08, 0.92), 1.0, 1.0)
        out.append(_Dot(spot(rng), rng.uniform(*radius) * scale, col))
    return out


def _paint_dots(col: torch.Tensor, u: torch.Tensor, v: torch.Tensor, dots: list[_Dot]):
    """Blend anti-aliased dots (coverage 0.5 - signed distance, clamped) into colours col [...,3] at coordinates
    u, v (same frame of reference as the dots). Returns (colours, coverage [...])."""
    cov = torch.zeros_like(u)
    for d in dots:
        c = torch.clamp(d.radius + 0.5 - torch.sqrt((u - d.center[0]) ** 2 + (v - d.center[1]) ** 2), 0.0, 1.0)
        col = col * (1 - c[..., None]) + torch.as_tensor(d.color, dtype=col.dtype) * c[..., None]
        cov = torch.maximum(cov, c)
    return col, cov


def _covered(obj: _Object, pos: np.ndarray) -> np.ndarray:
    """pos [T,N,2] image coords -> bool [T,N], True where the object's (hard) shape covers the position."""
    t = np.arange(pos.shape[0])
    u, v = _to_local(obj, t, pos[..., 0], pos[..., 1])
    return _signed_distance(obj.shape, obj.half, u, v) < 0


def _visibility(objects: list[_Object], pos: np.ndarray, depth: int, h: int, w: int) -> np.ndarray:
    """Visibility of points at pos [T,N,2] that lie at depth `depth` (-1 = background)."""
    vis = inside_frame(pos, (h, w))
    for j in range(depth + 1, len(objects)):
        vis &= ~_covered(objects[j], pos)
    return vis


def _sample_inside(rng, obj: _Object, n: int, margin: float) -> np.ndarray:
    """n local coords uniformly inside the shape shrunk by `margin` px (away from the anti-aliased edge)."""
    a, b = obj.half
    out = np.zeros((0, 2))
    while out.shape[0] < n:
        cand = rng.uniform(-1, 1, (max(4 * n, 16), 2)) * np.array([a, b])
        keep = _signed_distance(obj.shape, obj.half, cand[:, 0], cand[:, 1]) < -margin
        out = np.concatenate([out, cand[keep]])
    return out[:n]


def _pick_visible(positions: np.ndarray, vis: np.ndarray, n: int):
    """Keep n candidates, preferring those visible in frame 0, then those visible in some frame, then the rest
    (sampling order within each group), so most tracks can be queried on the first frame."""
    rank = np.where(vis[0], 0, np.where(vis.any(axis=0), 1, 2))
    order = np.argsort(rank, kind="stable")[:n]
    return positions[:, order], vis[:, order]


def make_clip(frames: int = 24, height: int = 128, width: int = 128, num_objects: int = 3,
              points_per_object: int = 8, seed: int = 0, identical: bool = False, background_points: int = 0,
              rotation: bool = True, textureless: float = 0.0, dots_per_object: int = 0,
              background_dots: int = 0, dot_radius: tuple = (1.2, 2.6),
              check: Callable[[], None] | None = None) -> SyntheticClip:
    """Render a seeded synthetic clip with exact ground truth (see the module docstring).

    textureless: probability (0..1) that an object is one flat colour (the pair of identical objects counts as
    one draw). dots_per_object / background_dots: small dots (radius uniform in `dot_radius` px at 128 px, half
    pure red) fixed on each object's surface / on the panning background; `dot_coverage` of the result is their visible
    coverage. `check` (optional) is called between objects (an interrupt check). Raises ValueError on
    out-of-range arguments."""
    frames, height, width = int(frames), int(height), int(width)
    if frames < 1:
        raise ValueError(f"frames: must be at least 1, got {frames}")
    if height < 16 or width < 16:
        raise ValueError(f"size: frames must be at least 16x16 pixels, got {width}x{height}")
    if num_objects < 0 or points_per_object < 0 or background_points < 0:
        raise ValueError("num_objects, points_per_object and background_points must be >= 0")
    if not (0.0 <= float(textureless) <= 1.0):
        raise ValueError(f"textureless: must be a probability in [0, 1], got {textureless}")
    if dots_per_object < 0 or background_dots < 0:
        raise ValueError("dots_per_object and background_dots must be >= 0")
    if not (len(dot_radius) == 2 and 0 < float(dot_radius[0]) <= float(dot_radius[1]) < 1e4):
        raise ValueError(f"dot_radius: expected (min, max) pixels with 0 < min <= max, got {dot_radius}")
    if identical:
        num_objects = max(int(num_objects), 2)
    rng = np.random.default_rng(int(seed))
    t = np.arange(frames)
    scale = max(1.0, min(height, width) / 128.0)

    # textures: background first, then one per object with hues spread around the wheel
    hue0 = rng.random()
    textures = [_noise_texture(rng, _hsv(rng.random(), 0.25, 0.45), 0.13, 2.5)]
    n_tex = num_objects - 1 if identical else num_objects
    for k in range(n_tex):
        base = _hsv((hue0 + k / max(n_tex, 1)) % 1.0, rng.uniform(0.45, 0.8), rng.uniform(0.6, 0.85))
        textures.append(_noise_texture(rng, base, 0.16, rng.uniform(2.0, 3.0)))

    objects: list[_Object] = []
    extra = num_objects - 2 if identical else num_objects
    for k in range(extra):   # in identical mode the random extras sit behind the pair
        objects.append(_random_object(rng, height, width, t, rotation, 2 + k if identical else 1 + k, scale))
    if identical:
        objects += _identical_pair(height, width, t, frames, 1, scale)

    pan_speed = rng.uniform(0.2, 0.6) * scale
    pan_dir = rng.uniform(0, 2 * np.pi)
    pan = rng.uniform(0, TEX * 1.2 * scale, 2)[None] + t[:, None] * pan_speed * np.array(
        [np.cos(pan_dir), np.sin(pan_dir)])[None]
    bg_texel = 1.2 * scale

    # optional extras, from their own stream so the draws above (and the default clip) never change
    rng2 = np.random.default_rng([int(seed), 1])
    flat = [k for k in range(1, len(textures)) if float(textureless) > 0 and rng2.random() < float(textureless)]
    for k in flat:
        textures[k] = np.broadcast_to(textures[k].mean(axis=(1, 2), keepdims=True), textures[k].shape).copy()
    obj_dots = [_random_dots(rng2, int(dots_per_object), lambda r, o=o: tuple(_sample_inside(r, o, 1, 1.0)[0]),
                             scale, dot_radius) for o in objects]
    bg_dots = _random_dots(rng2, int(background_dots),
                           lambda r: (r.uniform(0, width - 1) + pan[0, 0], r.uniform(0, height - 1) + pan[0, 1]),
                           scale, dot_radius)

    # ---------------------------------------------------------------- render (vectorised over frames)
    dtype = torch.float32   # coordinates < 1e4 px: float32 keeps ~1e-3 px, far below the 1 px we judge at
    ys = torch.arange(height, dtype=dtype)[None, :, None].expand(frames, height, width)
    xs = torch.arange(width, dtype=dtype)[None, None, :].expand(frames, height, width)
    texs = [torch.from_numpy(tx) for tx in textures]
    pan_t = torch.from_numpy(pan).to(dtype)
    gx, gy = xs + pan_t[:, 0, None, None], ys + pan_t[:, 1, None, None]
    img = _sample(texs[0], gx / bg_texel, gy / bg_texel)
    any_dots = bool(bg_dots) or any(obj_dots)
    dot_cov = torch.zeros((frames, height, width), dtype=dtype) if any_dots else None
    if bg_dots:
        img, dot_cov = _paint_dots(img, gx, gy, bg_dots)
    alphas = []
    hard = []
    for obj, dots in zip(objects, obj_dots):
        if check is not None:
            check()
        u, v = _to_local(obj, t, xs, ys)
        sd = _signed_distance(obj.shape, obj.half, u, v)
        a = torch.clamp(0.5 - sd, 0.0, 1.0)
        inside = a > 0   # texture lookups only where the object has coverage
        col = _sample(texs[obj.texture], u[inside] / obj.texel, v[inside] / obj.texel)
        ai = a[inside][:, None]
        if any_dots:      # visible dot coverage: what the object covers is hidden, its own dots are added
            covered = dot_cov[inside] * (1 - ai[:, 0])
            if dots:
                col, cov = _paint_dots(col, u[inside], v[inside], dots)
                covered = torch.maximum(covered, cov * ai[:, 0])
            dot_cov[inside] = covered
        img[inside] = img[inside] * (1 - ai) + col * ai
        alphas.append(a)
        hard.append(sd < 0)
    k_n = len(objects)
    masks = torch.zeros((frames, k_n, height, width), dtype=torch.float32)
    labels = torch.zeros((frames, height, width), dtype=torch.int64)
    front = torch.ones((frames, height, width), dtype=dtype)
    for k in range(k_n - 1, -1, -1):
        masks[:, k] = (alphas[k] * front).float()
        front = front * (1 - alphas[k])
    for k in range(k_n):   # later (nearer) objects overwrite
        labels[hard[k]] = k + 1

    # ---------------------------------------------------------------- ground-truth tracks
    paths, viss, ids = [], [], []
    margin = 1.5 * scale
    for k, obj in enumerate(objects):
        if points_per_object == 0:
            break
        cand = _sample_inside(rng, obj, 4 * points_per_object, margin)
        pos = _to_image(obj, cand)
        vis = _visibility(objects, pos, k, height, width)
        pos, vis = _pick_visible(pos, vis, points_per_object)
        paths.append(pos)
        viss.append(vis)
        ids += [k] * points_per_object
    if background_points > 0:
        first = np.stack([rng.uniform(0, width - 1, 4 * background_points),
                          rng.uniform(0, height - 1, 4 * background_points)], -1)
        g = first + pan[0][None]
        pos = g[None] - pan[:, None]
        vis = _visibility(objects, pos, -1, height, width)
        pos, vis = _pick_visible(pos, vis, background_points)
        paths.append(pos)
        viss.append(vis)
        ids += [-1] * background_points
    if paths:
        path = np.concatenate(paths, axis=1)
        vis = np.concatenate(viss, axis=1)
    else:
        path, vis = np.zeros((frames, 0, 2)), np.zeros((frames, 0), dtype=bool)
    first_vis = np.where(vis.any(axis=0), vis.argmax(axis=0), 0)
    n_idx = np.arange(path.shape[1])
    query = np.concatenate([first_vis[:, None], path[first_vis, n_idx]], axis=1)

    return SyntheticClip(
        video=img.clamp(0, 1).float().contiguous(),
        track_path=torch.from_numpy(path.astype(np.float32)),
        track_visibility=torch.from_numpy(vis),
        query_points=torch.from_numpy(query.astype(np.float32)),
        object_ids=torch.tensor(ids, dtype=torch.int64),
        masks=masks,
        labels=labels,
        dot_coverage=dot_cov.float() if any_dots else None,
    )
