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

from ..kernels.checks import check_video
from ..kernels.datatypes import NOT_KNOWN_YET, check_tracks
from ..kernels.tracks_io import parse_points
from .common import Progress, Tracks
from .timing import stamp_features

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
        for v in _each(values.get(name)):
            check_number(name, v, lo, hi, integer)


def _each(value) -> list:
    """The values of one input: [] when not connected (None), every element for a list input (a node with
    is_input_list gets lists), else [value]."""
    if value is None:
        return []
    return [v for v in value if v is not None] if isinstance(value, list) else [value]


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


def check_combo_inputs(cls, values: dict) -> None:
    """Each given Combo input value must be one of the options the node's schema lists now (ComfyUI 0.3.75 does
    not check V3 combo values; options of file lists change, so they are read fresh)."""
    for inp in cls.define_schema().inputs:
        if not isinstance(inp, io.Combo.Input) or inp.options is None:
            continue
        for v in _each(values.get(inp.id)):
            if v not in inp.options:
                shown = inp.options if len(inp.options) <= 12 else f"{len(inp.options)} options"
                raise ValueError(f"{inp.id}: {str(v)[:60]!r} is not one of {shown}")


class VdtNode(io.ComfyNode):
    """Base of every vdtrack node.

    - `execute` is wrapped so every Int/Float input is range- and finiteness-checked against the node's own schema
      before it runs (ComfyUI checks widget values only, never linked ones).
    - `validate_inputs` (run by ComfyUI before the graph runs, with None for linked inputs) checks the widget
      values: numbers (range and finiteness: 'nan' passes ComfyUI's own check), combo values, and the text
      inputs named in `TEXT_CHECKS` ({input: callable raising ValueError}), so a typo is reported before minutes
      of feature extraction. The first problem is returned as the message, starting with the input's name.
    Subclasses write `define_schema` and `execute` as for any V3 node, and optionally `TEXT_CHECKS`."""

    TEXT_CHECKS: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("execute")
        if isinstance(own, classmethod) and not hasattr(own.__func__, "_vdt_owner"):
            cls.execute = classmethod(_checked(own.__func__, cls))

    @classmethod
    def validate_inputs(cls, **values) -> bool | str:
        try:
            check_number_inputs(cls, values)
            check_combo_inputs(cls, values)
        except ValueError as e:
            return str(e)
        for name, check in cls.TEXT_CHECKS.items():
            for v in _each(values.get(name)):
                msg = validate_texts(**{name: (v, check)})
                if msg is not True:
                    return msg
        return True


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


def extract(backbone, frames: torch.Tensor, noise_level: float, timestep: int, spec, seed: int, kind: str,
            start: float, cond=None) -> io.NodeOutput:
    """What both feature-extraction nodes do once their inputs are checked: one `backbone.features` pass over
    `frames` [T,H,W,3] at the noise level of (noise_level, timestep) (noise_level_of), with the progress bar over
    its windows, and the node's two outputs (features_and_keys of spec's one layer) stamped with the time since
    `start` (nodes/timing.py)."""
    feats = backbone.features(frames, noise_level_of(backbone, noise_level, timestep), spec, int(seed), cond=cond,
                              progress=Progress(backbone.num_windows(frames.shape[0], spec)))
    first, keys = features_and_keys(feats, spec.layers[0], kind)
    return io.NodeOutput(stamp_features(first, start), stamp_features(keys, start))


# ------------------------------------------------------------------------------------------- noise level

# The two feature-extraction nodes (Extract Diffusion Features, Extract Backbone Features) share these inputs, so
# their noise convention cannot drift apart (tests/unit/test_node_schemas.py compares the two schemas).
NOISE_LEVEL_DEFAULT = 0.02     # HeFT's official code: features of the last of 50 sampling steps (docs/methods.md §3)
TIMESTEP_OFF = 0               # timestep 0 = no timestep, noise_level applies (t = 0 is the clean pass: noise level 0)
TIMESTEP_OFF_LEGACY = -1       # Extract Backbone Features' former 'no timestep': still accepted, same meaning


def noise_level_input(timestep: bool = True):
    """The noise level of a feature pass; `timestep`: the node also has timestep_input (which takes precedence)."""
    return io.Float.Input("noise_level", default=NOISE_LEVEL_DEFAULT, min=0.0, max=1.0, step=0.001,
                          tooltip="Fraction of the model's own sampling schedule (ComfyUI denoise sense: 0 = clean, "
                                  "1 = pure noise). Default 0.02: HeFT's last of 50 steps (its official code)."
                                  + (" Used when timestep is 0." if timestep else ""))


def timestep_input():
    return io.Int.Input("timestep", default=TIMESTEP_OFF, min=TIMESTEP_OFF_LEGACY, max=1000,
                        tooltip="A paper's timestep t of 1000 (what the model's time embedding gets; e.g. TED 300, "
                                "DiffTrack 19), converted to the model's noise level; takes precedence over "
                                "noise_level. 0 = use noise_level (the default; t = 0 would be the clean pass, which "
                                "noise_level 0 gives). -1, the 'off' value of older graphs, means the same as 0.")


def noise_level_of(backbone, noise_level: float, timestep: int) -> float:
    """The noise level (fraction of the model's schedule) a feature pass runs at: a `timestep` >= 1 (a paper's t
    of 1000) converted by the backbone, else `noise_level` (timestep 0, or -1 of older graphs)."""
    if int(timestep) > TIMESTEP_OFF:
        return backbone.noise_level_from_timestep(float(timestep))
    return float(noise_level)


# ------------------------------------------------------------------------------------------- videos and tracks

def rgb_video(name: str, images, min_frames: int = 1) -> torch.Tensor:
    """IMAGE batch -> [T,H,W,3]: a 1-channel video is repeated to grey RGB, an alpha channel dropped (nodes that
    draw or read colour need three channels; ComfyUI's IMAGE may carry 1 or 4)."""
    v = check_video(name, images, min_frames=min_frames)
    if v.shape[-1] == 1:
        return v.expand(-1, -1, -1, 3)
    return v[..., :3]


def tracks_for_video(name: str, tracks, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TRACKS drawn on / compared with `video` [T,H,W,C] -> (path [T,N,2] in the video's pixels, vis [T,N]).
    The tracks must have the video's frame count; tracks computed on frames of another size (their
    `frame_size`) are scaled onto the video's pixels (pixel centres on integers at both sizes)."""
    path, vis = check_tracks(name, tracks, frames=video.shape[0])
    fs = tracks.get("frame_size")
    if fs is None:
        return path, vis
    try:
        h0, w0 = (int(v) for v in (fs.tolist() if hasattr(fs, "tolist") else fs))
    except (TypeError, ValueError):
        raise ValueError(f"{name}: 'frame_size' must be (H, W), got {fs!r}") from None
    if h0 < 1 or w0 < 1:
        raise ValueError(f"{name}: 'frame_size' must be positive, got {fs!r}")
    h, w = video.shape[1], video.shape[2]
    if (h0, w0) == (h, w):
        return path, vis
    scale = torch.tensor([w / w0, h / h0], dtype=path.dtype)
    return (path + 0.5) * scale - 0.5, vis


# ------------------------------------------------------------------------------------------- text inputs before the run

def points_syntax(text) -> None:
    """The points text parses (JSON or lines, finite numbers, whole query frames >= 0); frame size and count are
    checked when the node runs (they come from the data). Raises ValueError naming 'points'."""
    if not isinstance(text, str):
        raise ValueError(f"points: expected text, got {type(text).__name__}")
    parse_points(text, NOT_KNOWN_YET, (NOT_KNOWN_YET, NOT_KNOWN_YET))


def prefix_syntax(text) -> None:
    """An output file name prefix: not empty, no control characters, absolute paths or '..'."""
    if not isinstance(text, str):
        raise ValueError(f"filename_prefix: expected text, got {type(text).__name__}")
    p = text.strip().replace("\\", "/")
    if not p:
        raise ValueError("filename_prefix: is empty")
    if any(ord(c) < 32 for c in p) or len(p) > 200:
        raise ValueError("filename_prefix: contains a control character or is longer than 200 characters")
    if p.startswith("/") or ":" in p or any(part == ".." for part in p.split("/")):
        raise ValueError(f"filename_prefix: '{text[:60]}' must be a relative name inside the output folder")


def validate_texts(**checks) -> bool | str:
    """`validate_inputs` body: name=(value, check) for each text input; a value of None (a link, whose value is
    known only when the graph runs) is skipped, as is '' where `check` is None-tolerant. Returns True or the
    first error message (ComfyUI shows it on the node before anything runs)."""
    for name, (value, check) in checks.items():
        if value is None:
            continue
        try:
            check(value)
        except ValueError as e:
            msg = str(e)
            return msg if msg.startswith(f"{name}:") else f"{name}: {msg}"
    return True


def optional_prefix_syntax(text) -> None:
    """As prefix_syntax, but empty means 'do not save'."""
    if text:
        prefix_syntax(text)


def optional_points_syntax(text) -> None:
    """As points_syntax, but empty is allowed (the node has another source of points)."""
    if text:
        points_syntax(text)
