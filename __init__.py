"""vdtrack: Video Diffusion Tracking nodes for ComfyUI.

ComfyUI finds the V3 entry point below. It is the only thing this module exports:
ComfyUI ignores `comfy_entrypoint` when `NODE_CLASS_MAPPINGS` exists, and importing
ComfyUI lazily keeps `vdtrack.kernels` importable without it.
"""

__version__ = "0.1.0"


async def comfy_entrypoint():
    from .nodes import VdtrackExtension

    return VdtrackExtension()
