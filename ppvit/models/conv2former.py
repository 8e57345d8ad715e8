"""conv2former family (being written)."""
