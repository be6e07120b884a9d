"""Queries several stages share (below ``steps/``, so that no stage imports another)."""
