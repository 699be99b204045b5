"""Search methods by name: the config values that make a search one paper's method.

A method is a registered dict of search-config values (relaxation and its kwargs, order,
whether α is updated); experiment configs apply it with :func:`apply_method`, and
``benchmarks/search_step.py --method NAME`` builds the same step, so the names in configs
and benchmarks are one set.

- ``darts``: DARTS (Liu et al., ICLR 2019), softmax mixing, first order (``darts2``:
  second order, Eq. 8).
- ``gdas``: GDAS (Dong & Yang, CVPR 2019), one op per edge sampled by hard Gumbel-softmax,
  only it computed, τ from 10 to 0.1 linearly over the epochs.
- ``spos``: SPOS (Guo et al., ECCV 2020) supernet training: one uniformly sampled path per
  step, weights only (α is not trained; a discrete search reads the supernet afterwards).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from dnas.registry import Registry

METHODS: Registry[dict[str, Any]] = Registry("method")
METHODS.add("darts", {"relax": "softmax", "relax_kwargs": {}, "order": 1, "update_alpha": True})
METHODS.add("darts2", {"relax": "softmax", "relax_kwargs": {}, "order": 2, "update_alpha": True})
METHODS.add("gdas", {"relax": "gdas", "relax_kwargs": {"tau_max": 10.0, "tau_min": 0.1}, "order": 1, "update_alpha": True})
METHODS.add("spos", {"relax": "uniform", "relax_kwargs": {}, "order": 1, "update_alpha": False})


def apply_method(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """Sets the config values of method ``name`` on a search config (in place; returned)."""
    for k, v in METHODS[name].items():
        config[k] = ml_collections.ConfigDict(v) if isinstance(v, dict) else v
    return config
