"""What several stages share, below ``steps/`` so that no stage imports another: ``stage_outputs`` (what they
read of earlier stages' outputs) and ``predictions`` (the prediction cache)."""
