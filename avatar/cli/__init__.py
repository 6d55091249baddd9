"""The command line and what it shows: the status app, status.json, the sweep summary.

The top layer: it may import every layer below (stages, VRAM, config, hardware);
nothing below imports it.
"""
