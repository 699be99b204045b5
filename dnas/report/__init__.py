"""Reports of finished or running runs: ``dnas show`` and its plots."""
