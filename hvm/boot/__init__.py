"""Boot protocols: each loader places an image in guest memory and returns the CPU entry state."""
