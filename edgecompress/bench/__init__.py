"""Measuring bundles: bench, compare, sweep."""
