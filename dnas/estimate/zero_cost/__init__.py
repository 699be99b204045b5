"""Zero-cost proxies and zero-shot search (issue 21).

- :mod:`dnas.estimate.zero_cost.proxies`: the proxies as pure functions and the ``PROXIES`` registry;
- :mod:`dnas.estimate.zero_cost.score`: many architectures of a space scored with one compilation;
- :mod:`dnas.estimate.zero_cost.probes`: where Fisher's gates and NASWOT's ReLU codes sit in a network;
- :mod:`dnas.cli.zero_cost`: ``dnas zero-cost`` (:func:`add_zero_cost_parser`, :func:`main_zero_cost`).
"""

from dnas.estimate.zero_cost.proxies import PROXIES, ProxyNet, vote
from dnas.estimate.zero_cost.score import ZeroCostScorer

# Registers ESTIMATORS["zero_cost"] and ["smash"] (dnas.estimate imports this package with
# the other estimators; the estimators themselves live in estimator.py).
from dnas.estimate.zero_cost import estimator as _estimator  # noqa: E402,F401

__all__ = ["PROXIES", "ProxyNet", "ZeroCostScorer", "vote"]
