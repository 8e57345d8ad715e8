"""dilateformer family (being written)."""
