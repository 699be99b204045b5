"""Search-space core: labelled choices, discrete encodings, sampling, mutation, crossover.

A :class:`Choice` is one decision point: a hierarchical label (``normal/edge_3_1``,
``stage3/block1/op``) and an ordered tuple of candidates. Declaring the same label twice
means one shared decision (this is how DARTS shares α across all normal cells), so the
candidates must agree.

A discrete architecture is one index per label: a ``dict`` for people, an
``int32[n_choices]`` vector in the space's fixed label order for jit, strategies and
predictors. ``sample``/``mutate``/``crossover`` are pure JAX functions of an explicit key.

Constraints (e.g. "each DARTS node keeps exactly two inputs") are expressed by *groups*:
choices that mutate and cross over as a unit, and a ``sample`` that only draws valid
groups. Mutation resamples one group, so any space whose validity is per-group stays
valid under mutation and crossover without extra code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dnas.core.errors import DnasError
from dnas.core.registry import Registry
from dnas.core.types import ArchVec, PRNGKey


@dataclasses.dataclass(frozen=True)
class Choice:
    """One decision point.

    Args:
      label: hierarchical name; two choices with the same label are one decision.
      candidates: ordered candidate values (op names, kernel sizes, widths, input ids...).
    """

    label: str
    candidates: tuple[Any, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(self.candidates))
        if not self.label:
            raise DnasError("a choice needs a non-empty label")
        if len(self.candidates) < 1:
            raise DnasError(f"choice {self.label!r} has no candidates")
        if len(set(map(repr, self.candidates))) != len(self.candidates):
            raise DnasError(f"choice {self.label!r} lists a candidate twice: {self.candidates}")

    @property
    def n(self) -> int:
        """Number of candidates."""
        return len(self.candidates)


class SearchSpace:
    """An ordered set of labelled choices with discrete encodings.

    A *registered* space (:func:`register_space`) is what configs name with
    ``config.space`` (+ ``config.space_kwargs`` for its constructor, ``config.layers``
    passed as ``layers``). It adds three methods to the encodings below, and that is all
    the rest of dnas calls:

    - ``supernet(*, C, num_classes, in_channels, rngs) -> nnx.Module``: the supernet, owning
      ``self.alpha = init_alpha(space, key)`` and called as ``net(x, arch) -> NetOutput``
      (:class:`dnas.core.types.NetOutput`);
    - ``derive(alpha: dict label -> logits) -> genotype``: the discrete architecture, an
      instance of a class registered with :func:`dnas.space.genotype.register_genotype`;
    - ``network(genotype, *, C, layers, num_classes, in_channels, rngs, **options)``
      (a static method): the derived network, called as ``net(x, *, key, drop_prob) ->
      NetOutput``; ``options`` carries train-config values it may use (``dataset``,
      ``auxiliary``) and must be accepted even when unused;
    - optionally ``check_network(genotype, *, image_shape, C, layers, **options)`` (a static
      method; :meth:`SearchSpace.check_network` accepts everything): raises
      :class:`DnasError` when ``network()`` of those options cannot run on images of
      ``image_shape`` (H, W, C), so that a train config is refused before its run directory
      is written.

    Args:
      choices: the choices; repeated labels are merged (and must list equal candidates).
      groups: optional partition of labels into units for mutation/crossover; by default
        every label is its own group.

    Example:
      >>> space = SearchSpace([Choice("l1/op", ("a", "b")), Choice("l2/op", ("a", "b", "c"))])
      >>> space.size()
      6
      >>> space.decode(space.encode({"l1/op": "b", "l2/op": 2}))  # values or indices
      {'l1/op': 1, 'l2/op': 2}
    """

    layerwise: ClassVar[bool] = False
    """True where every label is one layer of a chain of layers and its candidates are
    alternative blocks for that layer (ProxylessNAS, FBNet): a network's size is then the
    sum of its layers', so "the largest" and "the smallest" network are the per-label
    largest and smallest candidates (the sandwich rule, :func:`dnas.search.plans.sandwich_weights`).
    False for cell spaces, whose labels are edges of a DAG (a cell of the per-edge largest
    ops is not a network that contains the others)."""

    @staticmethod
    def check_network(genotype: Any, *, image_shape: tuple[int, int, int], C: int, layers: int, **options: Any) -> None:
        """Refuses (:class:`DnasError`) a derived network that cannot run on ``image_shape``
        images; by default every network can. Called by train-config validation."""

    def __init__(self, choices: Iterable[Choice], groups: Sequence[Sequence[str]] | None = None):
        merged: dict[str, Choice] = {}
        for c in choices:
            prev = merged.get(c.label)
            if prev is None:
                merged[c.label] = c
            elif prev.candidates != c.candidates:
                raise DnasError(
                    f"label {c.label!r} is used twice with different candidates "
                    f"({prev.candidates} vs {c.candidates}); a shared label must offer the same choice"
                )
        if not merged:
            raise DnasError("a search space needs at least one choice")
        self.choices: tuple[Choice, ...] = tuple(merged.values())
        self.labels: tuple[str, ...] = tuple(merged)
        self._index = {l: i for i, l in enumerate(self.labels)}
        self.num_candidates = np.array([c.n for c in self.choices], np.int32)
        if groups is None:
            groups = [[l] for l in self.labels]
        flat = [l for g in groups for l in g]
        if sorted(flat) != sorted(self.labels):
            raise DnasError("groups must partition the space's labels exactly once each")
        self.groups: tuple[tuple[int, ...], ...] = tuple(tuple(self._index[l] for l in g) for g in groups)

    # ----- sizes -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.choices)

    def num_configurations(self) -> int:
        """Product of candidate counts, valid or not (k^o for o choices of k candidates)."""
        return math.prod(int(n) for n in self.num_candidates)

    def size(self) -> int:
        """Number of valid architectures; equals :meth:`num_configurations` unless overridden."""
        return self.num_configurations()

    # ----- encodings ---------------------------------------------------------------------
    def index(self, label: str) -> int:
        """Position of ``label`` in the vector encoding."""
        try:
            return self._index[label]
        except KeyError:
            raise DnasError(f"unknown label {label!r}; labels look like {self.labels[:3]}...") from None

    def choice(self, label: str) -> Choice:
        """The :class:`Choice` for ``label``."""
        return self.choices[self.index(label)]

    def encode(self, arch: Mapping[str, Any]) -> np.ndarray:
        """Readable dict (label -> candidate index or value) -> ``int32[n_choices]``."""
        missing = [l for l in self.labels if l not in arch]
        extra = [l for l in arch if l not in self._index]
        if missing or extra:
            raise DnasError(f"architecture does not match the space: missing labels {missing[:5]}, unknown labels {extra[:5]}")
        vec = np.zeros(len(self.labels), np.int32)
        for i, c in enumerate(self.choices):
            v = arch[c.label]
            values_are_ints = all(isinstance(x, (int, np.integer)) for x in c.candidates)
            if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and not values_are_ints:
                # An int for a choice of named candidates is an index.
                if not 0 <= int(v) < c.n:
                    raise DnasError(f"index {v} for {c.label!r} is out of range [0, {c.n})")
                vec[i] = int(v)
            elif v in c.candidates:
                vec[i] = c.candidates.index(v)
            else:
                raise DnasError(f"{v!r} is not a candidate of {c.label!r}; candidates: {c.candidates}")
        return vec

    def decode(self, vec: ArchVec | np.ndarray) -> dict[str, int]:
        """``int32[n_choices]`` -> dict label -> candidate index."""
        vec = np.asarray(vec)
        self._check_vec(vec)
        return {l: int(v) for l, v in zip(self.labels, vec)}

    def names(self, vec: ArchVec | np.ndarray) -> dict[str, Any]:
        """``int32[n_choices]`` -> dict label -> candidate value (e.g. op name)."""
        return {l: self.choices[i].candidates[v] for i, (l, v) in enumerate(self.decode(vec).items())}

    def to_inputs(self, vec: ArchVec) -> dict[str, jax.Array]:
        """Vector -> per-label ``int32[]`` indices for a supernet's forward (jit-friendly)."""
        return {l: vec[i] for i, l in enumerate(self.labels)}

    def _check_vec(self, vec: np.ndarray) -> None:
        if vec.shape != (len(self.labels),):
            raise DnasError(f"architecture vector has shape {vec.shape}, expected ({len(self.labels)},)")
        if (vec < 0).any() or (vec >= self.num_candidates).any():
            raise DnasError("architecture vector has an index out of range for its choice")

    # ----- validity, sampling, variation ---------------------------------------------------
    def is_valid(self, vec: ArchVec | np.ndarray) -> bool:
        """Whether ``vec`` is a valid architecture (always True unless overridden)."""
        vec = np.asarray(vec)
        return vec.shape == (len(self.labels),) and bool(((vec >= 0) & (vec < self.num_candidates)).all())

    def sample(self, key: PRNGKey) -> ArchVec:
        """A uniformly random valid architecture, ``int32[n_choices]``. Pure and jittable."""
        return jax.random.randint(key, (len(self.labels),), 0, jnp.asarray(self.num_candidates), dtype=jnp.int32)

    def distinct_samples(self, n: int, key: PRNGKey, *, max_rounds: int = 64) -> np.ndarray:
        """``n`` distinct uniformly drawn architectures, ``int32[n, len(self)]``, in draw order.

        Raises:
          DnasError: when ``n`` is not in ``[1, size()]``, or when the sampler does not reach
            ``n`` distinct architectures in ``max_rounds`` rounds of ``2n`` draws (a space
            whose sampler covers fewer architectures than it counts); never fewer silently.
        """
        n = int(n)
        if not 1 <= n <= self.size():
            raise DnasError(f"the number of architectures must be in [1, {self.size()}] for this space (its size), got {n}")
        sample = jax.jit(jax.vmap(self.sample))
        seen: dict[bytes, np.ndarray] = {}
        for r in range(max_rounds):
            for v in np.asarray(sample(jax.random.split(jax.random.fold_in(key, r), 2 * n))):
                if len(seen) < n:
                    seen.setdefault(v.tobytes(), v)
            if len(seen) == n:
                return np.stack(list(seen.values())).astype(np.int32)
        raise DnasError(f"drew only {len(seen)} distinct architectures of {n} in {max_rounds} rounds; ask for fewer")

    def mutation_weights(self) -> np.ndarray:
        """How likely :meth:`mutate` picks each group: non-negative integers, one per group
        (relative weights; at least one positive). Uniform by default.

        A space overrides this to follow its benchmark's mutation, e.g. NAS-Bench-201's
        R_EA picks a node and then one of its incoming edges (:class:`NB201Space`). Integers
        rather than probabilities so that a draw is exact with a single integer draw
        modulo their sum, loop-free under ``vmap`` (:func:`mutation_table`).
        """
        return np.ones(len(self.groups), np.int64)

    def mutate(self, key: PRNGKey, vec: ArchVec) -> ArchVec:
        """Resamples one group, drawn by :meth:`mutation_weights`, so the architecture
        changes. Pure and jittable."""
        vec = jnp.asarray(vec, jnp.int32)
        k_group, k_new = jax.random.split(key)
        table = mutation_table(self)
        # Uniform weights give table == arange(groups): the same draw as a plain randint.
        g = jnp.asarray(table)[jax.random.randint(k_group, (), 0, table.size)]
        masks = np.zeros((len(self.groups), len(self.labels)), bool)
        for gi, idx in enumerate(self.groups):
            masks[gi, list(idx)] = True
        mask = jnp.asarray(masks)[g]
        # A group with a single configuration cannot change; bound the retries.
        def cond(c):
            i, _, new = c
            return (i < 64) & jnp.all(jnp.where(mask, new == vec, True))

        def body(c):
            i, k, _ = c
            k, sub = jax.random.split(k)
            return i + 1, k, jnp.where(mask, self.sample(sub), vec)

        init = body((0, k_new, vec))
        return jax.lax.while_loop(cond, body, init)[2]

    def crossover(self, key: PRNGKey, a: ArchVec, b: ArchVec) -> ArchVec:
        """Uniform crossover over groups: each group comes from ``a`` or ``b``. Pure."""
        take_a = jax.random.bernoulli(key, 0.5, (len(self.groups),))
        owner = np.zeros(len(self.labels), np.int32)
        for gi, idx in enumerate(self.groups):
            owner[list(idx)] = gi
        return jnp.where(take_a[jnp.asarray(owner)], jnp.asarray(a, jnp.int32), jnp.asarray(b, jnp.int32))


def mutation_table(space: SearchSpace, changeable_only: bool = False) -> np.ndarray:
    """Group indices, each repeated by its :meth:`SearchSpace.mutation_weights`: a uniform
    draw from this table picks a group with those weights exactly.

    Args:
      space: the space.
      changeable_only: keep only single-label groups with more than one candidate (the
        loop-free mutation of :mod:`dnas.search.strategies.evolution` needs a group that can
        change).
    Raises:
      DnasError: weights of the wrong shape, negative, or all zero (over the kept groups).
    """
    weights = np.asarray(space.mutation_weights())
    name = type(space).__name__
    if weights.shape != (len(space.groups),) or not np.issubdtype(weights.dtype, np.integer) or (weights < 0).any():
        raise DnasError(
            f"{name}.mutation_weights() must give one non-negative integer per group ({len(space.groups)}), got {weights!r}"
        )
    if changeable_only:
        weights = np.where([len(g) == 1 and space.num_candidates[g[0]] > 1 for g in space.groups], weights, 0)
    if weights.sum() <= 0:
        raise DnasError(f"{name}.mutation_weights() gives no {'changeable ' if changeable_only else ''}group a positive weight")
    return np.repeat(np.arange(len(space.groups), dtype=np.int32), weights)


SPACES: Registry[type] = Registry("space", builtins="dnas.space.spaces")
"""Registered search-space classes by name (see :class:`SearchSpace`)."""


def register_space(name: str):
    """Class decorator registering a :class:`SearchSpace` subclass under ``name``.

    The genotypes its ``derive`` returns name the space back (``genotype.space == name``),
    so ``dnas train`` builds the right network from a genotype alone.
    """

    def deco(cls: type) -> type:
        for method in ("supernet", "derive", "network"):
            if not callable(getattr(cls, method, None)):
                raise DnasError(f"space {name!r} ({cls.__name__}) lacks the method {method}(); see dnas.space.base.SearchSpace")
        cls.space_name = name
        SPACES.add(name, cls)
        return cls

    return deco


HARDWARE_SPACES: Registry[type] = Registry("hardware space", builtins="dnas.space.spaces")
"""Registered hardware search spaces by name (``systolic``): spaces of accelerator
parameters with no network of their own, composed with a network space by
``config.space_kwargs.hardware`` (:class:`JointSpace`)."""


class JointSpace(SearchSpace):
    """A network space and a hardware space searched as one (codesign NAS).

    The labels are the network's followed by the hardware's, so one ``int32[n_net + n_hw]``
    vector describes a network *and* the accelerator it runs on, and every discrete
    strategy (random, REA, REINFORCE, predictor, NSGA-II) mutates and crosses both with no
    code of its own: the groups are the network's groups followed by the hardware's. This
    is the joint space of NAAS (Lin et al., "NAAS: Neural Accelerator Architecture Search",
    DAC 2021) and DANCE (Choi et al., DAC 2021): accelerator sizing and dataflow as choices
    beside the ops.

    Everything that builds or derives a *network* (``supernet``, ``derive``, ``network``,
    the genotype) is the network space's; the supernet also owns one α per hardware label,
    so a differentiable search learns a distribution over accelerators beside the one over
    ops, trained by the α-loss cost term (:meth:`supernet`).

    Args:
      net_space: the network space (any :class:`SearchSpace` with a supernet).
      hw_space: the hardware space (an instance of a :data:`HARDWARE_SPACES` class).
      hardware_name: the hardware space's registry name (recorded for readable output).
    """

    def __init__(self, net_space: SearchSpace, hw_space: SearchSpace, hardware_name: str = ""):
        clash = sorted(set(net_space.labels) & set(hw_space.labels))
        if clash:
            raise DnasError(f"the network and hardware spaces share the label {clash[0]!r}; hardware labels must differ (they start with 'hw/')")
        self.net_space, self.hw_space, self.hardware_name = net_space, hw_space, hardware_name
        self.num_network = len(net_space.labels)
        groups = [[net_space.labels[i] for i in g] for g in net_space.groups] + [[hw_space.labels[i] for i in g] for g in hw_space.groups]
        super().__init__(list(net_space.choices) + list(hw_space.choices), groups)
        self.space_name = getattr(net_space, "space_name", type(net_space).__name__)

    def __getattr__(self, name: str) -> Any:
        # Space-specific helpers (NB201's arch_str, ProxylessNAS' lut_keys...) are the network's;
        # guarded so that a missing attribute during __init__ does not recurse.
        if name.startswith("__") or "net_space" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.net_space, name)

    def split(self, vec: Any) -> tuple[Any, Any]:
        """``int32[..., n_net + n_hw]`` -> (network part ``[..., n_net]``, hardware part ``[..., n_hw]``)."""
        return vec[..., : self.num_network], vec[..., self.num_network :]

    def join(self, net_vec: Any, hw_vec: Any) -> np.ndarray:
        """The joint vectors ``int32[..., n_net + n_hw]`` of network and hardware vectors
        whose leading (batch) shapes broadcast."""
        net_vec, hw_vec = np.asarray(net_vec, np.int32), np.asarray(hw_vec, np.int32)
        batch = np.broadcast_shapes(net_vec.shape[:-1], hw_vec.shape[:-1])  # either part may be one shared row
        return np.concatenate([np.broadcast_to(net_vec, batch + net_vec.shape[-1:]), np.broadcast_to(hw_vec, batch + hw_vec.shape[-1:])], axis=-1)

    def size(self) -> int:
        """Valid networks times hardware configurations."""
        return self.net_space.size() * self.hw_space.size()

    def is_valid(self, vec: ArchVec | np.ndarray) -> bool:
        """Both parts valid in their own space."""
        vec = np.asarray(vec)
        if vec.shape != (len(self.labels),):
            return False
        net, hw = self.split(vec)
        return self.net_space.is_valid(net) and self.hw_space.is_valid(hw)

    def sample(self, key: PRNGKey) -> ArchVec:
        """A valid network (its space's own sampler) and a uniform hardware configuration."""
        k_net, k_hw = jax.random.split(key)
        return jnp.concatenate([jnp.asarray(self.net_space.sample(k_net), jnp.int32), jnp.asarray(self.hw_space.sample(k_hw), jnp.int32)])

    def mutation_weights(self) -> np.ndarray:
        """The network's weights (its benchmark's mutation), then the hardware's, scaled so
        both parts keep their share by group count."""
        net, hw = np.asarray(self.net_space.mutation_weights(), np.int64), np.asarray(self.hw_space.mutation_weights(), np.int64)
        # Scaled so each part is picked in proportion to its group count (as under uniform
        # weights) while the weights within a part keep their ratios.
        return np.concatenate([net * int(hw.sum()) * len(net), hw * int(net.sum()) * len(hw)])

    def supernet(self, *, C: int, num_classes: int, in_channels: int, rngs: nnx.Rngs) -> nnx.Module:
        """The network space's supernet, whose α also holds one logit vector per hardware
        label (initialised as DARTS initialises α). The network reads only its own labels, so
        the hardware α moves only through the α-loss cost term: the expected cost of the
        accelerator model under both distributions (DANCE, EDD's hardware α)."""
        net = self.net_space.supernet(C=C, num_classes=num_classes, in_channels=in_channels, rngs=rngs)
        alpha = getattr(net, "alpha", None)
        if alpha is None:
            raise DnasError(f"the supernet of {self.space_name!r} has no .alpha; a joint space needs one to add the hardware's")
        key = rngs.params()
        for i, c in enumerate(self.hw_space.choices):
            alpha[c.label] = type(next(iter(alpha.values())))(1e-3 * jax.random.normal(jax.random.fold_in(key, i), (c.n,), jnp.float32))
        return net

    def derive(self, alpha: Mapping[str, Any]) -> Any:
        """The network space's genotype (the hardware's choice: :meth:`derive_hardware`)."""
        return self.net_space.derive(alpha)

    def derive_hardware(self, alpha: Mapping[str, Any]) -> dict[str, Any]:
        """The most likely hardware configuration under α, ``{label: value}``."""
        return {c.label: c.candidates[int(np.argmax(np.asarray(alpha[c.label])))] for c in self.hw_space.choices}

    def network(self, genotype: Any, **kwargs: Any) -> nnx.Module:
        """The network space's derived network."""
        return self.net_space.network(genotype, **kwargs)

    def check_network(self, genotype: Any, **kwargs: Any) -> None:
        """The network space's check."""
        return self.net_space.check_network(genotype, **kwargs)


def compose_space(net_space: SearchSpace, hardware: str = "", hardware_kwargs: Mapping[str, Any] | None = None) -> SearchSpace:
    """``net_space`` alone, or joined with the registered hardware space ``hardware``."""
    if not hardware:
        if hardware_kwargs:
            raise DnasError("space_kwargs.hardware_kwargs given without space_kwargs.hardware; name a hardware space (dnas list spaces)")
        return net_space
    cls = HARDWARE_SPACES[hardware]
    try:
        hw = cls(**dict(hardware_kwargs or {}))
    except TypeError as e:
        raise DnasError(f"hardware space {hardware!r}: {e}") from None
    return JointSpace(net_space, hw, hardware)


def build_space(name: str, layers: int | None, kwargs: Mapping[str, Any] | None = None) -> SearchSpace:
    """The registered space ``name`` built with ``layers`` (None = its default) and
    ``kwargs`` (one-line errors for unknown names and arguments). ``kwargs["hardware"]``
    (+ ``hardware_kwargs``) joins it with a registered hardware space (:class:`JointSpace`)."""
    import inspect

    cls = SPACES[name]
    kwargs = dict(kwargs or {})
    hardware, hardware_kwargs = kwargs.pop("hardware", ""), kwargs.pop("hardware_kwargs", None)
    if hardware or hardware_kwargs:
        return compose_space(build_space(name, layers, kwargs), hardware, hardware_kwargs)
    params = inspect.signature(cls.__init__).parameters
    bad = [k for k in kwargs if k not in params or k == "self"]
    if bad:
        accepted = [p for p in params if p not in ("self", "layers")]
        raise DnasError(f"space {name!r} takes no argument {bad[0]!r} in config.space_kwargs; it accepts: {', '.join(accepted)}")
    try:
        return cls(**kwargs) if layers is None else cls(layers=int(layers), **kwargs)
    except TypeError as e:
        raise DnasError(f"space {name!r}: {e}") from None


def build_eval_network(genotype, dataset: str, C: int, layers: int, num_classes: int, auxiliary: bool = True, in_channels: int = 3, *, rngs: nnx.Rngs) -> nnx.Module:
    """The derived network of any registered genotype: its space's ``network()``.

    Args:
      genotype: an instance of a registered genotype kind (names its space).
      dataset: passed as an option (DARTS builds its ImageNet network for "imagenet").
      C, layers, num_classes, auxiliary, in_channels: the network's size and data shape.
    """
    return SPACES[genotype.space].network(
        genotype, C=C, layers=layers, num_classes=num_classes, in_channels=in_channels, rngs=rngs, dataset=dataset, auxiliary=auxiliary
    )

