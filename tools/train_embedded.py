"""Train the pack's embedded video diffusion model (models/) on its own synthetic clips: the command line of
vdt_model.train (its docstring says what it does and how to resume)."""
from vdt_model.train import main

if __name__ == "__main__":
    raise SystemExit(main())
