"""dnas/run."""
