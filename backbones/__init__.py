"""Adapters over video diffusion models behind one protocol (see protocol.py)."""
