"""dnas/cli."""
