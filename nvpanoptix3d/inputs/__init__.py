"""What the engine reads at inference: single images of any size (images.py)."""
