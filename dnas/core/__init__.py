"""dnas/core."""
