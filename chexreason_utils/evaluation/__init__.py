"""Evaluation: batched generation, metrics, the scores frame and contrasts, the paper's reported numbers (reference),
claims, diagnostics."""
