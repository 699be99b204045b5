"""dnas/data."""
