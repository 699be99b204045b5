"""Ready search spaces: DARTS CNN cells, NAS-Bench-201 cells, the ProxylessNAS and FBNet mobile spaces."""

from dnas.space.spaces.darts_cnn import DARTS_OPS, DartsSearchNetwork, DartsSpace
from dnas.space.spaces.fbnet import FBNetGenotype, FBNetSpace
from dnas.space.spaces.nb201 import NB201SearchNetwork, NB201Space
from dnas.space.spaces.proxylessnas import ProxylessGenotype, ProxylessSpace

__all__ = ["DARTS_OPS", "DartsSpace", "DartsSearchNetwork", "NB201Space", "NB201SearchNetwork", "ProxylessGenotype", "ProxylessSpace", "FBNetGenotype", "FBNetSpace"]
