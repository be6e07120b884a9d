"""The training runs several stages launch (02's SFT, 03's GRPO, 08's cells on top of both) and what they read of
each other: one record of a GRPO run's inputs, resolved once, the runs of a profile, and their diagnostics. Below
``steps/``, so no stage imports another."""
