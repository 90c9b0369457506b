"""Releasing a model: its output dataset for detection research and the baseline detectors."""
