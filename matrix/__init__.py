"""In-process reference classifiers (linear, two-layer network, 10-layer CNN)."""
