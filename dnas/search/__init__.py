"""dnas/search."""
