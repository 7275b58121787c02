"""Input definitions the nodes share, and the check every node's numeric inputs get before it runs.

ComfyUI checks `min`/`max` only for values typed into a widget: a value that arrives through a link (a primitive
node, another pack's INT/FLOAT output, a batch script's API prompt with a link) is passed to `execute` unchecked,
and a widget value 'nan' passes min/max (every comparison with NaN is false). `VdtNode` therefore checks every
Int/Float input of a node against the limits its own schema declares, and finiteness, before `execute` runs;
a violation raises ValueError naming the input. Derived limits (one input against another, against the data)
stay in the node and use `check_number` with the same wording.
"""
from __future__ import annotations

import functools
import inspect
import math
import numbers

import numpy as np
import torch
from comfy_api.latest import io

from .common import Tracks

# ------------------------------------------------------------------------------------------- number checks


def _as_number(name: str, value):
    """int/float (also numpy scalars and one-element tensors) -> a Python int or float; anything else raises."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: expected a number, got {type(value).__name__} {str(value)[:40]!r}")
    return value


def check_number(name: str, value, lo: float | None = None, hi: float | None = None,
                 integer: bool = False) -> int | float:
    """`value` as int (integer=True) or float, finite and within [lo, hi] (either may be None); raises ValueError
    naming `name`. Python ints are compared exactly (a 400-digit integer is reported, never converted)."""
    v = _as_number(name, value)
    if isinstance(v, int):
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ValueError(f"{name}: {_short(v)} is outside {_range(lo, hi)}")
        return v if integer else float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name}: {v!r} is not a finite number")
    if integer and v != int(v):
        raise ValueError(f"{name}: expected a whole number, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name}: {v!r} is outside {_range(lo, hi)}")
    return int(v) if integer else float(v)


def _short(v: int) -> str:
    s = str(v)
    return s if len(s) <= 24 else f"{s[:10]}...({len(s)} digits)"


def _range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"the allowed range {lo}..{hi}"
    return f"the allowed range >= {lo}" if lo is not None else f"the allowed range <= {hi}"


_LIMITS: dict[type, dict[str, tuple[float | None, float | None, bool]]] = {}


def number_limits(cls) -> dict[str, tuple[float | None, float | None, bool]]:
    """{input id: (min, max, integer)} for every Int/Float input of a node's schema. Cached per node class
    (ComfyUI runs a locked clone of the class: the cache is keyed by the class that defined `execute`)."""
    owner = getattr(getattr(cls.execute, "__func__", None), "_vdt_owner", cls)
    limits = _LIMITS.get(owner)
    if limits is None:
        limits = {}
        for inp in owner.define_schema().inputs:
            if isinstance(inp, (io.Int.Input, io.Float.Input)):
                limits[inp.id] = (inp.min, inp.max, isinstance(inp, io.Int.Input))
        _LIMITS[owner] = limits
    return limits


def check_number_inputs(cls, values: dict) -> None:
    """Check each given Int/Float input value (None = not connected) against the node's schema."""
    for name, (lo, hi, integer) in number_limits(cls).items():
        if values.get(name) is not None:
            check_number(name, values[name], lo, hi, integer)


def _checked(func, owner):
    """Wrap `owner`'s `execute` so its numeric inputs are checked first (sync or async)."""
    sig = inspect.signature(func)

    def check(cls, args, kwargs):
        check_number_inputs(cls, sig.bind_partial(cls, *args, **kwargs).arguments)

    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def run(cls, *args, **kwargs):
            check(cls, args, kwargs)
            return await func(cls, *args, **kwargs)
    else:
        @functools.wraps(func)
        def run(cls, *args, **kwargs):
            check(cls, args, kwargs)
            return func(cls, *args, **kwargs)
    run._vdt_owner = owner
    return run


class VdtNode(io.ComfyNode):
    """Base of every vdtrack node: `execute` is wrapped so every Int/Float input is range- and finiteness-checked
    against the node's own schema before it runs (ComfyUI checks widget values only). Subclasses write
    `define_schema` and `execute` as for any V3 node."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("execute")
        if isinstance(own, classmethod) and not hasattr(own.__func__, "_vdt_owner"):
            cls.execute = classmethod(_checked(own.__func__, cls))


# ------------------------------------------------------------------------------------------- shared inputs

POINTS_TOOLTIP = ('Points in pixels of the frames: KJNodes JSON [{"x":..,"y":..}] with an optional "t" (query '
                  "frame, default 0), a JSON list of [x,y] or [x,y,t], or one 'x,y[,t]' per line (# comments "
                  "allowed).")
DEFAULT_POINTS = '[{"x": 64, "y": 64}]'


def points_input(id: str = "points", default: str = DEFAULT_POINTS, note: str = "", optional: bool = False):
    """The query-points text input (multiline), one tooltip for every node; `note` adds what this node does
    with the points."""
    return io.String.Input(id, multiline=True, default=default, optional=optional,
                           tooltip=POINTS_TOOLTIP + (" " + note if note else ""))


def video_input(id: str = "images", what: str = "The video", optional: bool = False):
    """A video as an IMAGE batch [frames,H,W,3]."""
    return io.Image.Input(id, optional=optional, tooltip=f"{what}: IMAGE batch [frames,H,W,3], frames on the "
                                                         "batch axis.")


def tracks_input(id: str = "tracks", what: str = "The tracks", optional: bool = False):
    return Tracks.Input(id, optional=optional, tooltip=f"{what}: TRACKS (track_path [frames,points,2] x,y pixels, "
                                                       "track_visibility [frames,points]).")


def seed_input(what: str = "Noise seed (same inputs + seed = same output).", default: int = 0,
               max: int = 0xFFFFFFFFFFFFFFFF, control_after_generate: bool | None = None):
    """A seed input; `control_after_generate=True` adds the frontend's fixed/increment/randomize widget (None:
    no such widget; False is not the same, the frontend still adds one)."""
    return io.Int.Input("seed", default=default, min=0, max=max, control_after_generate=control_after_generate,
                        tooltip=what)


PREFIX_RULE = "inside ComfyUI's output folder (subfolders allowed, no absolute paths or '..')"


def filename_prefix_input(default: str, what: str, optional: bool = False):
    return io.String.Input("filename_prefix", default=default, optional=optional, tooltip=f"{what} {PREFIX_RULE}.")


def pixels_radius_input(id: str, default: float, min: float, max: float, what: str, step: float = 0.5,
                        optional: bool = False):
    """A radius (or distance) in pixels of the frames; the label says the unit."""
    return io.Float.Input(id, display_name=f"{id} (px)", default=default, min=min, max=max, step=step,
                          optional=optional, tooltip=f"{what} In pixels.")


def cells_radius_input(id: str, default: int, min: int, max: int, what: str, optional: bool = False):
    """A radius in feature cells (one cell = the features' stride in pixels); the label says the unit."""
    return io.Int.Input(id, display_name=f"{id} (cells)", default=default, min=min, max=max, optional=optional,
                        tooltip=f"{what} In feature cells (one cell = the features' stride in pixels).")


# ------------------------------------------------------------------------------------------- feature kinds

QK = "q+k"
KEYS_OUTPUT_TOOLTIP = ("With kind 'q+k': the keys of the same layer from the same forward pass (DiffTrack's "
                       "key_features); with any other kind: the same features as the first output.")


def feature_kinds(kind: str, options) -> tuple[str, ...]:
    """A kind combo value -> FeatureSpec kinds: 'q+k' captures queries and keys in one pass."""
    if kind not in options:
        raise ValueError(f"kind: expected one of {list(options)}, got {kind!r}")
    return ("q", "k") if kind == QK else (kind,)


def features_and_keys(feats: dict, layer: int, kind: str) -> tuple[dict, dict]:
    """(first output, second output) of an extraction node: (q, k) for 'q+k', else the features twice."""
    if kind == QK:
        return feats[f"q{layer}"], feats[f"k{layer}"]
    return feats[f"{kind}{layer}"], feats[f"{kind}{layer}"]
