"""Runs: the config schema, the one run skeleton (:mod:`dnas.run.driver`) and the run
kinds built on it (search, train, multi-trial), data-parallel placement, metrics files.

Importing this package registers every built-in run kind in
:data:`dnas.run.config.RUN_KINDS`.
"""

from dnas.run import multitrial, search, train, train_estimator  # noqa: F401  (each registers its run kind / the train estimator)
