"""dnas/space."""
