"""coatnet family (being written)."""
