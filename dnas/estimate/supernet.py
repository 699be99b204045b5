"""A trained supernet read back from a search run's directory, without its data.

One-shot evaluation (:mod:`dnas.estimate.oneshot`), inherited weights
(:mod:`dnas.estimate.inherit`, ``dnas train --init-from``) and the ``oneshot`` estimator
all start from the weights a ``dnas search`` run checkpointed. They need the supernet's
structure (space, width, depth, input shape: all in ``config.json``) and its α, weights
and BatchNorm statistics; not the optimizer states, the data, or the jitted step. So the
supernet is built abstractly (``nnx.eval_shape``: no weights are initialised) and only
those three fields are restored from the newest checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from dnas.core.checkpoint import Checkpointer
from dnas.core.errors import DnasError
from dnas.core.imports import import_files
from dnas.data.datasets import input_shape
from dnas.space.base import SearchSpace, build_space
from dnas.space.fewshot import FewShotSplit, make_split
from dnas.space.mixed import Alpha

# Search configs written before the space kwargs existed kept these at the top level.
_MOVED_TO_SPACE_KWARGS = {"darts": ("nodes", "ops", "shared", "cell_impl", "remat"), "nb201": ("ops", "shared")}


class Supernet(NamedTuple):
    """A search run's trained supernet.

    Attributes:
      space: the run's search space.
      graphdef: the supernet's graph (training mode, as the search split it).
      alpha: ``nnx.State`` of α (logits per label).
      weights: ``nnx.State`` of the parameters.
      stats: ``nnx.State`` of the BatchNorm statistics.
      config: the run's ``config.json`` as a dict.
      step: the checkpoint's step.
      split: for a few-shot run, how architectures route to its sub-supernets; ``alpha``,
        ``weights`` and ``stats`` then carry a leading axis ``split.k`` (None: one supernet).
    """

    space: SearchSpace
    graphdef: nnx.GraphDef
    alpha: nnx.State
    weights: nnx.State
    stats: nnx.State
    config: dict[str, Any]
    step: int
    split: FewShotSplit | None = None

    def model(self) -> nnx.Module:
        """The supernet as a module (a fresh copy of the restored state; sub-supernet 0's
        for a few-shot run)."""
        if self.split is None:
            return nnx.merge(self.graphdef, self.alpha, self.weights, self.stats, copy=True)
        first = lambda t: jax.tree_util.tree_map(lambda x: x[0], t)  # noqa: E731
        return nnx.merge(self.graphdef, first(self.alpha), first(self.weights), first(self.stats), copy=True)


    def state_for(self, genotype: Any) -> tuple[nnx.State, nnx.State]:
        """``(weights, stats)`` a derived network of ``genotype`` inherits: the one
        supernet's, or for a few-shot run the sub-supernet the genotype routes to (Zhao et
        al., ICML 2021: each architecture is evaluated, and fine-tuned, from its own
        sub-supernet).

        Raises:
          DnasError: a few-shot run whose space cannot encode ``genotype``.
        """
        if self.split is None:
            return self.weights, self.stats
        to_vec = getattr(self.space, "genotype_to_vec", None)
        if to_vec is None:
            raise DnasError(f"the few-shot run's space {self.config.get('space')!r} cannot encode a genotype to route it to its "
                            "sub-supernet; inherit from a one-shot (not few-shot) run of this space")
        k = int(self.split.route(np.asarray(to_vec(genotype))))
        pick = lambda t: jax.tree_util.tree_map(lambda x: x[k], t)  # noqa: E731
        return pick(self.weights), pick(self.stats)


def read_run_config(run_dir: str | Path, *, what: str = "a dnas search") -> dict[str, Any]:
    """The ``config.json`` of run directory ``run_dir`` as a dict.

    Raises:
      DnasError: one line when the folder holds no readable config.
    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise DnasError(f"{str(run_dir)!r} holds no config.json; pass the directory of {what} run")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DnasError(f"{str(path)!r} is not valid JSON ({e}); restore it from a copy of the run") from None
    if not isinstance(raw, dict):
        raise DnasError(f"{str(path)!r} must hold a JSON object")
    if "space_kwargs" not in raw:
        raw["space_kwargs"] = {k: raw[k] for k in _MOVED_TO_SPACE_KWARGS.get(raw.get("space", "darts"), ()) if k in raw}
    return raw


def supernet_of(config: dict[str, Any]) -> tuple[SearchSpace, nnx.Module]:
    """The space and the abstract (``eval_shape``) supernet a search config describes."""
    import_files(config.get("imports", []))
    if config.get("kind", "search") != "search":
        raise DnasError(f"a {config.get('kind')!r} run has no supernet; pass the directory of a dnas search run")
    space = build_space(config["space"], int(config["layers"]), dict(config.get("space_kwargs") or {}))
    (_, _, c), classes = input_shape(config["dataset"], int(config.get("downsample", 1)))
    model = nnx.eval_shape(lambda: space.supernet(C=int(config["init_channels"]), num_classes=classes, in_channels=c, rngs=nnx.Rngs(0)))
    model.train()  # split as the search splits it: the graph of the training-mode supernet
    return space, model


def load_supernet(run_dir: str | Path) -> Supernet:
    """The newest checkpointed supernet of search run ``run_dir`` (no data is loaded).

    Raises:
      DnasError: the folder is not a search run, or has no checkpoint yet.
    """
    run = Path(run_dir)
    config = read_run_config(run)
    space, model = supernet_of(config)
    graphdef, alpha, weights, stats = nnx.split(model, Alpha, nnx.Param, nnx.BatchStat)
    labels = list((config.get("fewshot") or {}).get("split") or [])
    split = make_split(space, labels) if labels else None
    if split is not None:  # the few-shot run's K sub-supernets, stacked (dnas.search.fewshot)
        stacked = lambda t: jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((split.k,) + tuple(x.shape), x.dtype), t)  # noqa: E731
        alpha, weights, stats = stacked(alpha), stacked(weights), stacked(stats)
    ck = Checkpointer(run / "checkpoints")
    try:
        step = ck.latest_step()
        if step is None:
            raise DnasError(f"{str(run)!r} has no checkpoint yet; run the search (dnas search --workdir {run}) first")
        got = ck.restore_fields(step, {"alpha": alpha, "weights": weights, "stats": stats})
    finally:
        ck.close()
    return Supernet(space, graphdef, got["alpha"], got["weights"], got["stats"], config, int(step), split)
