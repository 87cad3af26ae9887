"""Offline datasets and user arrays for training, calibration and validation."""

from eecompile.data.datasets import Dataset, load_data, parse_data_spec, DATASETS

__all__ = ["Dataset", "load_data", "parse_data_spec", "DATASETS"]
