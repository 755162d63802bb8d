"""Training: configs, run folders, the training loop, checkpoints and the experiment protocol."""
