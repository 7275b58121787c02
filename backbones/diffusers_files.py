"""Checks on untrusted diffusers model files, made before anything is allocated.

A model folder under models/diffusers is input like any other: model_index.json, each component's config.json, a
sharded-weights index and the .safetensors headers are read and checked here (bounded reads, types, sizes, names
that stay inside the folder), the model a config describes is built on PyTorch's "meta" device (shapes only, no
memory) to estimate what loading it needs and to compare its parameters with the tensors the weights files hold.
Only then does diffusers / transformers load it (diffusers_common.load_from_folder / load_from_single_file).
Every failure is a ValueError starting with the node input ("model:") and naming the file. The bounds are our
choice: far above any published video diffusion model, far below what would exhaust a machine.

A load that fails after allocating (diffusers' own error, out of memory) is turned into such a ValueError by
`failed_load`, which drops the original exception (its traceback holds the half-built modules) and collects
garbage, so nothing of the failed model stays resident.
"""
from __future__ import annotations

import gc
import inspect
import json
import logging
import math
import os
import re
import traceback
from typing import Optional

import torch

MAX_JSON_BYTES = 1 << 20        # model_index.json, config.json, index.json: a few KB in real models
MAX_CONFIG_INT = 1 << 24        # any integer in a config (hidden sizes, vocabularies, sample sizes)
MAX_CONFIG_COUNT = 256          # layers / blocks / heads per config entry (real models: under 64)
MAX_CONFIG_LIST = 256           # entries of a list in a config
MAX_TIMESTEPS = 100_000         # scheduler num_train_timesteps (real models: 1000)
LIBRARIES = ("diffusers", "transformers")
# the components the adapters read; in model_index.json each must be [library, class] (or null)
COMPONENTS = ("transformer", "transformer_2", "unet", "vae", "image_encoder", "text_encoder", "tokenizer",
              "scheduler", "feature_extractor", "image_processor")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
_COUNT_KEY = re.compile(r"(^|_)(num_(hidden_)?layers|layers_per_block|num_blocks|depth|num_attention_heads|"
                        r"transformer_layers_per_block|num_heads)($|_)")


def label(path: str) -> str:
    """A file's name as shown in errors: its model folder, component folder and file name (never the full path)."""
    parts = os.path.normpath(path).split(os.sep)
    return "/".join(parts[-3:])


def read_json(path: str) -> dict:
    """A JSON object from an untrusted file: at most MAX_JSON_BYTES, UTF-8, an object at the top.
    Raises ValueError("model: <file>: ...")."""
    where = label(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_JSON_BYTES:
            raise ValueError(f"model: {where} is {size:,} bytes, more than the {MAX_JSON_BYTES:,} a config may be")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)
    except OSError as e:
        raise ValueError(f"model: {where} cannot be read ({e.strerror or e})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"model: {where} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"model: {where} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise ValueError(f"model: {where}: the JSON is nested too deeply") from None
    except ValueError as e:              # e.g. an integer with more digits than Python converts
        raise ValueError(f"model: {where} is not valid JSON ({str(e)[:80]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"model: {where} must hold a JSON object, got {type(data).__name__}")
    return data


def check_model_index(source: str) -> dict:
    """model_index.json of a diffusers folder: `_class_name` a string, every entry a plain folder name, every
    component mapped to [library, class] with the library diffusers or transformers and the class one it
    defines (or to null); other entries may be pipeline options (a number, true/false, a short string).
    Returns the parsed object."""
    path = os.path.join(source, "model_index.json")
    index = read_json(path)
    where = label(path)
    name = index.get("_class_name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"model: {where}: '_class_name' must be a pipeline class name, got {_clip(name)}")
    for key, value in index.items():
        if key.startswith("_"):
            continue
        if not _NAME.fullmatch(key):
            raise ValueError(f"model: {where}: component {_clip(key)} is not a plain folder name")
        if value is None or (isinstance(value, list) and len(value) == 2 and value[0] is None and value[1] is None):
            continue
        if key not in COMPONENTS and (isinstance(value, (bool, int, float)) or
                                      (isinstance(value, str) and len(value) <= 200)):
            continue                     # a pipeline option (Wan 2.2: boundary_ratio, expand_timesteps)
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
            raise ValueError(f"model: {where}: component '{key}' must be [library, class], got {_clip(value)}")
        library, cls = value
        if library not in LIBRARIES:
            raise ValueError(f"model: {where}: component '{key}' names library {_clip(library)}; "
                             f"expected one of {list(LIBRARIES)}")
        if not _NAME.fullmatch(cls) or not _library_has(library, cls):
            raise ValueError(f"model: {where}: component '{key}' names class {_clip(cls)}, which {library} does "
                             f"not define")
    return index


def _library_has(library: str, cls: str) -> bool:
    import importlib

    try:
        return inspect.isclass(getattr(importlib.import_module(library), cls))
    except (AttributeError, ImportError, RuntimeError):      # lazy modules raise RuntimeError on broken imports
        return False


def _clip(value, n: int = 60) -> str:
    r = repr(value)
    return r if len(r) <= n else f"{r[:n]}... ({len(r)} characters)"


# ------------------------------------------------------------------ configs
def check_config_values(config: dict, where: str, cls=None) -> None:
    """Types and sizes of a config's values: against the defaults of cls.__init__ where it has the key (an int
    where an int is expected, a bool for a bool, a number for a float, a string for a string, a list for a
    tuple), and for every value: integers within +-MAX_CONFIG_INT, counts of layers/blocks/heads within
    0..MAX_CONFIG_COUNT, lists at most MAX_CONFIG_LIST long, numbers finite."""
    defaults = {}
    if cls is not None:
        try:
            defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
                        if p.default is not inspect.Parameter.empty}
        except (TypeError, ValueError):
            defaults = {}
    for key, value in config.items():
        if key.startswith("_"):
            continue
        if key in defaults and value is not None:
            _check_type(key, value, defaults[key], where)
        _check_value(key, value, where, depth=0)


def _check_type(key: str, value, default, where: str) -> None:
    def bad(expected: str):
        raise ValueError(f"model: {where}: '{key}' must be {expected}, got {_clip(value)}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            bad("true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            bad("an integer")
        if default >= 0 and value < 0:
            bad("an integer >= 0")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad("a number")
    elif isinstance(default, str):
        if not isinstance(value, str):
            bad("a string")
    elif isinstance(default, (tuple, list)):
        if not isinstance(value, (list, tuple, int, str)) or isinstance(value, bool):    # diffusers broadcasts one value
            bad("a list")
        if isinstance(value, (list, tuple)) and default and all(isinstance(d, int) and not isinstance(d, bool)
                                                                 for d in default):
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
                bad("a list of integers >= 0")


def _check_value(key: str, value, where: str, depth: int) -> None:
    if depth > 8:
        raise ValueError(f"model: {where}: '{key}' is nested too deeply")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if abs(value) > MAX_CONFIG_INT:
            raise ValueError(f"model: {where}: '{key}' = {_clip(value)} is beyond +-{MAX_CONFIG_INT:,}")
        if _COUNT_KEY.search(key) and not 0 <= value <= MAX_CONFIG_COUNT:
            raise ValueError(f"model: {where}: '{key}' = {value} outside 0..{MAX_CONFIG_COUNT}")
        if key == "num_train_timesteps" and not 1 <= value <= MAX_TIMESTEPS:
            raise ValueError(f"model: {where}: 'num_train_timesteps' = {value} outside 1..{MAX_TIMESTEPS:,}")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"model: {where}: '{key}' = {value} is not a finite number")
    elif isinstance(value, (list, tuple)):
        if len(value) > MAX_CONFIG_LIST:
            raise ValueError(f"model: {where}: '{key}' has {len(value):,} entries, more than {MAX_CONFIG_LIST}")
        for v in value:
            _check_value(key, v, where, depth + 1)
    elif isinstance(value, dict):
        if len(value) > MAX_CONFIG_LIST:
            raise ValueError(f"model: {where}: '{key}' has {len(value):,} entries, more than {MAX_CONFIG_LIST}")
        for k, v in value.items():
            _check_value(f"{key}.{k}", v, where, depth + 1)


def check_scheduler_config(path: str) -> dict:
    """A scheduler_config.json: a bounded JSON object with bounded values (num_train_timesteps included)."""
    config = read_json(path)
    check_config_values(config, label(path))
    return config


def build_on_meta(cls, folder: str) -> torch.nn.Module:
    """The module folder/config.json describes, built on the meta device (shapes only, nothing allocated), after
    check_config_values. diffusers ModelMixin and transformers PreTrainedModel classes."""
    path = os.path.join(folder, "config.json")
    where = label(path)
    raw = read_json(path)
    check_config_values(raw, where, cls)
    try:
        with torch.device("meta"):
            if hasattr(cls, "from_config") and hasattr(cls, "load_config"):          # diffusers
                return cls.from_config(cls.load_config(folder, local_files_only=True))
            config = cls.config_class.from_pretrained(folder, local_files_only=True)  # transformers
            return cls(config)
    except Exception as e:        # noqa: BLE001 - whatever the class's __init__ raises on a config it cannot build
        raise ValueError(f"model: {where} does not describe a {cls.__name__} "
                         f"({type(e).__name__}: {str(e)[:200]})") from None


# ------------------------------------------------------------------ weights
def weights_files(folder: str, variant: Optional[str]) -> list[str]:
    """The .safetensors files of a component folder: the single weights file, or the shards its index names
    (plain file names inside the folder, each existing). Names as diffusers/transformers write them:
    diffusion_pytorch_model[.VARIANT].safetensors, diffusion_pytorch_model.safetensors.index[.VARIANT].json."""
    names = set(os.listdir(folder))
    suffix = f".{variant}.safetensors" if variant else ".safetensors"
    index_suffix = f".safetensors.index.{variant}.json" if variant else ".safetensors.index.json"   # diffusers'
    for base in ("diffusion_pytorch_model", "model"):
        if base + suffix in names:
            return [os.path.join(folder, base + suffix)]
        if base + index_suffix in names:
            path = os.path.join(folder, base + index_suffix)
            index = read_json(path)
            weight_map = index.get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f"model: {label(path)}: 'weight_map' must be a non-empty object")
            shards = sorted({v for v in weight_map.values()} if all(isinstance(v, str) for v in weight_map.values())
                            else {None})
            for s in shards:
                if s is None or not _FILE_NAME.fullmatch(s) or not s.endswith(".safetensors"):
                    raise ValueError(f"model: {label(path)}: shard {_clip(s)} is not a .safetensors file name in "
                                     f"the folder")
                if s not in names:
                    raise ValueError(f"model: {label(path)}: shard '{s}' is missing")
            return [os.path.join(folder, s) for s in shards]
    raise ValueError(f"model: no {('diffusion_pytorch_model' + suffix)} in {label(folder)}")


def read_header(file: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """{tensor name: (shape, dtype name)} from a .safetensors header, read by safetensors itself (which checks
    that the header is complete and that every tensor lies inside the file, so a truncated file or one whose
    header claims more data than it holds is refused here, before any tensor is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        out = {}
        with safe_open(file, "pt") as f:
            for k in f.keys():
                s = f.get_slice(k)
                out[k] = (tuple(int(d) for d in s.get_shape()), str(s.get_dtype()))
        return out
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"model: {label(file)} is not a readable .safetensors file, truncated or corrupt "
                         f"({str(e)[:160]})") from None


_ITEM_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2}


def header_bytes(header: dict) -> int:
    return sum(math.prod(shape) * _ITEM_BYTES.get(dtype, 1) for shape, dtype in header.values())


def check_weights_match(model: torch.nn.Module, header: dict, where: str) -> None:
    """The tensors a file holds are the module's parameters: the same names and shapes. Names the module
    registers as non-persistent buffers (transformers' position_ids) and those its class says to ignore are
    allowed extras; of tied parameters (one tensor under several names, e.g. T5's shared and
    encoder.embed_tokens weights) one name is enough, as save_pretrained writes only one."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    persistent = set(expected)
    ignorable = {n for n, _ in model.named_buffers()} - persistent
    patterns = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])]
    unexpected = sorted(k for k in header if k not in expected and k not in ignorable
                        and not any(p.search(k) for p in patterns))
    tied: dict[int, set] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        tied.setdefault(id(p), set()).add(name)
    present = {name for names in tied.values() if names & set(header) for name in names}
    missing = sorted(k for k in expected if k not in header and k not in present)
    wrong = sorted(k for k in expected if k in header and tuple(header[k][0]) != expected[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unknown (e.g. {unexpected[:3]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with other shapes (e.g. '{k}': {list(header[k][0])} in the file, "
                         f"{list(expected[k])} in the config)")
        raise ValueError(f"model: {where} does not match {type(model).__name__} as its config.json describes it: "
                         f"tensors {'; '.join(parts)}")


def model_bytes(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Bytes of a (meta) module's parameters at `dtype` plus its buffers at their own dtype."""
    params = sum(p.numel() for p in model.parameters()) * torch.empty((), dtype=dtype).element_size()
    return params + sum(b.numel() * b.element_size() for b in model.buffers())


def check_memory(need: int, where: str, what: str) -> None:
    """Refuse when `need` bytes exceed the RAM free now (ComfyUI's count)."""
    import comfy.model_management

    free = comfy.model_management.get_free_memory(torch.device("cpu"))
    if need > free:
        raise ValueError(f"model: {where}: {what} needs about {need / 2 ** 30:,.1f} GiB of RAM to load, "
                         f"{free / 2 ** 30:,.1f} GiB is free")


def _load_bytes(model: Optional[torch.nn.Module], dtype: torch.dtype, file_bytes: int) -> int:
    """RAM a diffusers load peaks at: without accelerate, the module built with random weights in float32 plus
    the state dict read from the files; with accelerate (modules built empty, the tensors moved in) about the
    larger of the two. `model` None: a file whose model is not known here, counted as its own size twice (once)."""
    from diffusers.utils import is_accelerate_available

    if model is None:
        return file_bytes if is_accelerate_available() else 2 * file_bytes
    if is_accelerate_available():
        return max(model_bytes(model, dtype), file_bytes)
    return model_bytes(model, torch.float32) + file_bytes


def check_component(cls, folder: str, variant: Optional[str], dtype: torch.dtype) -> None:
    """Everything about a component folder (config.json + safetensors weights) that can be checked before
    loading: the config's types and sizes, the model it describes built on the meta device, the memory
    loading needs against the free RAM, the weights headers (complete, inside the file) and their tensors
    against the model's parameters. Raises ValueError("model: <file>: ...")."""
    model = build_on_meta(cls, folder)
    files = weights_files(folder, variant)
    header: dict = {}
    for f in files:
        header.update(read_header(f))
    where = label(files[0]) if len(files) == 1 else f"{label(folder)} (weights in {len(files)} shards)"
    check_memory(_load_bytes(model, dtype, header_bytes(header)), label(os.path.join(folder, "config.json")),
                 f"the {cls.__name__} it describes")
    check_weights_match(model, header, where)


def check_single_file(model: torch.nn.Module, file: str, dtype: torch.dtype, strip=None) -> dict:
    """A single .safetensors file for an already-described model (meta or None): header complete, memory
    bounded, and (given `strip`, the key-prefix rule) its tensors matching the model (checked first: with a
    shipped config, the file is what may be wrong). Returns the header."""
    header = read_header(file)
    if model is None:
        check_memory(_load_bytes(None, dtype, header_bytes(header)), label(file), "this file")
        return header
    if strip is not None:
        check_weights_match(model, strip(header, set(model.state_dict())), label(file))
    check_memory(_load_bytes(model, dtype, header_bytes(header)), label(file), f"{type(model).__name__}")
    return header


# ------------------------------------------------------------------ failures
def failed_load(source: str, error: BaseException) -> str:
    """The message for a load that raised: ours as is, anything else (diffusers, safetensors, out of memory)
    as "model: loading <folder> failed (...)". Logs the traceback as text."""
    if isinstance(error, ValueError) and str(error).split(":", 1)[0] in ("model", "vae", "family"):
        return str(error)
    logging.warning("vdtrack: loading %s failed:\n%s", label(source),
                    "".join(traceback.format_exception(type(error), error, error.__traceback__)))
    return f"model: loading '{os.path.basename(source.rstrip(os.sep))}' failed ({type(error).__name__}: " \
           f"{str(error)[:300]})"


def release_after_failure() -> None:
    """After a failed load, with the failure's exception already dropped: collect the half-built modules (cycles
    through frames included) and give cached device memory back."""
    import comfy.model_management

    gc.collect()
    comfy.model_management.soft_empty_cache()
