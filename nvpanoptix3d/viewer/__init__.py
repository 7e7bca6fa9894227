"""Scene pages: what an inference job reconstructed, drawn in a browser."""
