"""Distillation from one or several teachers: teacher ensembles and weighting strategies."""
