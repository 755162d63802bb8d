"""Data layer: volume I/O, dataset layouts, validation, phantom, preprocessing, slices, splits."""
