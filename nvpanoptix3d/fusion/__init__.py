"""Frames of a posed folder fused into one scene (scene.py) and its outputs (outputs.py)."""
