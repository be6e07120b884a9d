"""Evaluation: batched generation, metrics, the scores frame and contrasts, claims, diagnostics."""
