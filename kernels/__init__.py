"""Pure tensor math (torch/numpy/einops/opencv only, never ComfyUI): tracking, propagation,
metrics, synthetic data. Device-agnostic and batched."""
