"""Training: the models, SFT data and trainer, GRPO with the paper's rewards, resumable runs."""
