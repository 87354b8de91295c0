"""Comparison methods used only by the benchmarks (never installed with the voxelfm package)."""
