"""Data: reading, preprocessing, caching, splitting and windowing sequences."""
