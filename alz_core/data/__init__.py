"""Datasets: synthetic generators in the standard layouts, and sample loaders."""
