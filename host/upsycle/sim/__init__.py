"""Simulators that drive many instances of the shared protocol objects."""
