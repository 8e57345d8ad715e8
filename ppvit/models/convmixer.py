"""convmixer family (being written)."""
