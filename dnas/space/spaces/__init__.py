"""Ready search spaces: DARTS CNN cells, NAS-Bench-201 cells, the ProxylessNAS and FBNet mobile spaces, and the
systolic-array hardware space (:data:`HARDWARE_SPACES`, for codesign)."""

from dnas.space.spaces.darts_cnn import DARTS_OPS, DartsSearchNetwork, DartsSpace
from dnas.space.spaces.hardware import Accelerator, SystolicSpace, make_accelerator
from dnas.space.spaces.fbnet import FBNetGenotype, FBNetSpace
from dnas.space.spaces.nb201 import NB201SearchNetwork, NB201Space
from dnas.space.spaces.proxylessnas import ProxylessGenotype, ProxylessSpace

__all__ = ["Accelerator", "SystolicSpace", "make_accelerator", "DARTS_OPS", "DartsSpace", "DartsSearchNetwork", "NB201Space", "NB201SearchNetwork", "ProxylessGenotype", "ProxylessSpace", "FBNetGenotype", "FBNetSpace"]
