"""Evaluate the embedded model (models/) on held-out synthetic clips and write one table: the command line of
vdt_model.evaluate (its docstring lists the rows and settings)."""
from vdt_model.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
