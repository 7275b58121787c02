"""The embedded model's development code: `train` (tools/train_embedded.py) trains the tiny Wan image-to-video
model in models/ on the pack's synthetic clips; `evaluate` (tools/eval_embedded.py) writes its evaluation table.
Importable by name once tools/setup.sh has installed tools/ (the tests import both)."""
