"""dnas: neural architecture search in JAX / Flax NNX.

The names a notebook user needs; everything else lives in its layer's package
(README, "Architecture")::

    import dnas
    space = dnas.build_space("nb201", layers=1)
    vec = space.sample(jax.random.key(0))
    c = dnas.search_defaults(); c.dataset = "digits"
    genotype = dnas.run_search(dnas.validate(c), "runs/mine")
"""

from dnas.core.errors import DnasError
from dnas.core.stats import hypervolume, pareto_front, pareto_mask, rank_quality
from dnas.estimate import ESTIMATORS, Estimator
from dnas.hardware.cost_model import COST_MODELS, CostModel, build_cost_model, register_cost_model
from dnas.estimate.oneshot import OneShotEvaluator
from dnas.estimate.supernet import Supernet, load_supernet
from dnas.run.config import RUN_KINDS, apply_overrides, load_config, validate
from dnas.run.multitrial import multitrial_defaults, run_multitrial
from dnas.run.search import build_search, default_search_config, run_search, search_defaults
from dnas.run.train import run_train, train_defaults
from dnas.search.bilevel import make_search_step
from dnas.search.objectives import OBJECTIVES
from dnas.search.strategies import STRATEGIES, Strategy
from dnas.space import genotype
from dnas.space.base import HARDWARE_SPACES, SPACES, Choice, JointSpace, SearchSpace, build_space, register_space
from dnas.space.mixed import Alpha, MixedOp
from dnas.space.ops import OPS, register_op
from dnas.space.relax import RELAXATIONS, make_relaxation, register_relaxation

__all__ = [
    "COST_MODELS", "ESTIMATORS", "HARDWARE_SPACES", "OBJECTIVES", "OPS", "RELAXATIONS", "RUN_KINDS", "SPACES", "STRATEGIES",
    "Alpha", "Choice", "CostModel", "DnasError", "Estimator", "JointSpace", "MixedOp", "OneShotEvaluator", "SearchSpace", "Strategy", "Supernet",
    "apply_overrides", "build_cost_model", "build_search", "build_space", "hypervolume", "default_search_config", "genotype", "load_config", "load_supernet",
    "make_relaxation", "make_search_step", "multitrial_defaults", "pareto_front", "pareto_mask", "rank_quality",
    "register_cost_model", "register_op", "register_relaxation", "register_space", "run_multitrial", "run_search", "run_train",
    "search_defaults", "train_defaults", "validate",
]
