"""Collects every node class from the node modules of this package (each lists its own in NODES)."""
from __future__ import annotations

import importlib
import logging
import pkgutil

from comfy_api.latest import ComfyExtension, io


def all_nodes(strict: bool = False) -> list[type[io.ComfyNode]]:
    """Every node of the pack. A module or schema that fails is logged and skipped (one broken node must not
    take the whole pack down in a user's ComfyUI); `strict=True` raises instead (the tests use it)."""
    found: list[type[io.ComfyNode]] = []
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_") or mod.name in ("common", "inputs"):
            continue
        try:
            module = importlib.import_module(f"{__name__}.{mod.name}")
            for cls in getattr(module, "NODES", []):
                cls.GET_SCHEMA()          # validates ids, types and options now, not at first use
                found.append(cls)
        except Exception:
            if strict:
                raise
            logging.exception("vdtrack: skipping nodes of module %s", mod.name)
    return found


class VdtrackExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # ComfyUI 0.3.75 calls only this hook at load time: register the pack's model folder here as well
        from .model_folder import register_model_folders

        register_model_folders()
        return all_nodes()
