"""Pure tensor math (torch/numpy/opencv only, never ComfyUI): tracking, propagation,
metrics, synthetic data. Device-agnostic and batched."""
