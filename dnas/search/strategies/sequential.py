"""Sequential codesign: the network first, then the accelerator for it (the usual practice
that joint search is measured against).

Over a joint (network + hardware) space (:class:`~dnas.space.base.JointSpace`): for the
first ``network_evals`` evaluations a network strategy searches the network part on a
fixed ``baseline`` accelerator, guided by the first objective alone (the accuracy, under
whatever hard limits the objective carries, e.g. a FLOPs limit: "the best network under a
FLOPs budget"); then a hardware strategy searches the accelerator for the best network
found, on every objective (NSGA-II for a Pareto front). This is the two-step baseline of
the codesign papers: NAAS (Lin et al., DAC 2021, "sizing-only" and network-only search),
"Best of Both Worlds" (Abdelfattah et al., DAC 2020, the sequential baseline) and DANCE
(Choi et al., DAC 2021).

Both inner strategies must ask the same number of architectures per step (``batch``), so
the joint search's loop, budget and resume are the multi-trial ones unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dnas.core.errors import DnasError
from dnas.core.types import PRNGKey
from dnas.search.strategies import STRATEGIES, Strategy
from dnas.space.base import JointSpace, SearchSpace


class SequentialState(NamedTuple):
    """``net``/``hw``: the inner strategies' states; ``best_net int32[n_net]`` and
    ``best_fit f32[]``: the best network of phase one so far; ``count``: evaluations told."""

    net: Any
    hw: Any
    best_net: jax.Array
    best_fit: jax.Array
    count: jax.Array


def baseline_vector(space: JointSpace, baseline: Mapping[str, Any] | None) -> np.ndarray:
    """The hardware vector of ``baseline`` (``{label or short name: value}``; missing labels
    take their first candidate), ``int32[n_hw]``."""
    hw = space.hw_space
    given = {(k if k in hw.labels else f"hw/{k}"): v for k, v in dict(baseline or {}).items()}
    unknown = [k for k in given if k not in hw.labels]
    if unknown:
        raise DnasError(f"sequential: baseline names no hardware label {unknown[0]!r}; labels: {', '.join(hw.labels)}")
    arch = {c.label: given.get(c.label, c.candidates[0]) for c in hw.choices}
    return hw.encode(arch)


def sequential(space: SearchSpace, network_evals: int = 100, network_strategy: str = "rea", network_kwargs: Mapping[str, Any] | None = None,
               hardware_strategy: str = "nsga2", hardware_kwargs: Mapping[str, Any] | None = None, baseline: Mapping[str, Any] | None = None,
               num_objectives: int = 1, batch: int = 10) -> Strategy:
    """Network search on a baseline accelerator, then accelerator search for the best network.

    Args:
      space: a :class:`~dnas.space.base.JointSpace` (``space_kwargs.hardware=...``).
      network_evals: evaluations of phase one (rounded up to whole asks).
      network_strategy, network_kwargs: the registered strategy of phase one, over the
        network space, maximising the first objective.
      hardware_strategy, hardware_kwargs: the strategy of phase two, over the hardware
        space; ``nsga2`` gets every objective (``num_objectives``).
      baseline: the accelerator of phase one, ``{label: value}`` (missing labels: their
        first candidate).
      num_objectives: m, columns of the told fitness (the multi-trial build sets it).
      batch: architectures per step of both phases, for each inner strategy that takes a
        ``batch`` and is not given one.
    Returns:
      a :class:`~dnas.search.strategies.Strategy` over :class:`SequentialState`.
    """
    if not isinstance(space, JointSpace):
        raise DnasError("the sequential strategy searches a joint space: set space_kwargs.hardware (e.g. 'systolic')")
    if int(network_evals) < 1:
        raise DnasError(f"sequential: network_evals must be >= 1, got {network_evals}")
    m = max(int(num_objectives), 1)
    base = jnp.asarray(baseline_vector(space, baseline), jnp.int32)
    net_kw, hw_kw = dict(network_kwargs or {}), dict(hardware_kwargs or {})
    for name, kw in ((network_strategy, net_kw), (hardware_strategy, hw_kw)):
        params = inspect.signature(STRATEGIES[name]).parameters
        if "batch" in params:
            kw.setdefault("batch", int(batch))
        if "num_objectives" in params and kw is hw_kw:
            kw.setdefault("num_objectives", m)
    inner_net = STRATEGIES[network_strategy](space.net_space, **net_kw)
    inner_hw = STRATEGIES[hardware_strategy](space.hw_space, **hw_kw)
    shape = lambda st: jax.eval_shape(st.ask, jax.eval_shape(st.init, jax.random.key(0)), jax.random.key(0))[0].shape
    (p_net, _), (p_hw, _) = shape(inner_net), shape(inner_hw)
    if p_net != p_hw:
        raise DnasError(f"sequential: both strategies must ask as many architectures per step; {network_strategy} asks {p_net}, "
                        f"{hardware_strategy} {p_hw} (set their batch)")
    n_net = space.num_network

    def first(fitness: jax.Array) -> jax.Array:
        return fitness.reshape(fitness.shape[0], -1)[:, 0]

    def init(key: PRNGKey) -> SequentialState:
        k1, k2 = jax.random.split(key)
        return SequentialState(inner_net.init(k1), inner_hw.init(k2), jnp.zeros((n_net,), jnp.int32), jnp.array(-jnp.inf, jnp.float32),
                               jnp.zeros((), jnp.int32))

    def ask(state: SequentialState, key: PRNGKey) -> tuple[jax.Array, SequentialState]:
        phase_one = state.count < network_evals

        def net_step():
            nets, st = inner_net.ask(state.net, key)
            return jnp.concatenate([nets.astype(jnp.int32), jnp.broadcast_to(base, (nets.shape[0], base.shape[0]))], 1), state._replace(net=st)

        def hw_step():
            hws, st = inner_hw.ask(state.hw, key)
            return jnp.concatenate([jnp.broadcast_to(state.best_net, (hws.shape[0], n_net)), hws.astype(jnp.int32)], 1), state._replace(hw=st)

        return jax.lax.cond(phase_one, net_step, hw_step)

    def tell(state: SequentialState, archs: jax.Array, fitness: jax.Array) -> SequentialState:
        phase_one = state.count < network_evals
        nets, hws = archs[:, :n_net], archs[:, n_net:]

        def net_tell():
            f = first(fitness)
            i = jnp.argmax(f)
            better = f[i] > state.best_fit
            return state._replace(net=inner_net.tell(state.net, nets, f), best_net=jnp.where(better, nets[i], state.best_net),
                                  best_fit=jnp.where(better, f[i], state.best_fit))

        def hw_tell():
            takes_all = "num_objectives" in inspect.signature(STRATEGIES[hardware_strategy]).parameters
            return state._replace(hw=inner_hw.tell(state.hw, hws, fitness if takes_all else first(fitness)))

        new = jax.lax.cond(phase_one, net_tell, hw_tell)
        return new._replace(count=state.count + archs.shape[0])

    return Strategy(init, ask, tell)


STRATEGIES.add("sequential", sequential)
