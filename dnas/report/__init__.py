"""dnas/report."""
