"""Losses: Lovász-softmax, KL and feature distillation, and the composite training loss."""
