"""vdtrack's benchmarks and evaluation reports (time and peak memory, thread count stated; TAP-Vid tables on
synthetic clips). Run one with `.vdt/venv/bin/python -m vdt_bench.NAME --help`; installed editable by
tools/setup.sh (tools/pyproject.toml) next to vdt_dev.
"""
