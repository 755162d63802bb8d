"""Inference: trained models, slice prediction, segmentation of files, post-processing, export."""
