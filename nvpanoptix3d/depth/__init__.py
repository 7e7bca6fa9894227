"""Depth sources beside the depth head: multi-view stereo from posed frames (multiview.py)."""
