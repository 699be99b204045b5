"""Search: differentiable (state, plans, bi-level step, methods, diagnostics, the latency
term) and discrete (strategies, objectives, the budgeted multi-trial loop)."""
