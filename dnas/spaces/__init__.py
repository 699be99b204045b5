"""Ready search spaces: DARTS CNN cells and NAS-Bench-201 cells."""

from dnas.spaces.darts_cnn import DARTS_OPS, DartsSearchNetwork, DartsSpace
from dnas.spaces.nb201 import NB201SearchNetwork, NB201Space

__all__ = ["DARTS_OPS", "DartsSpace", "DartsSearchNetwork", "NB201Space", "NB201SearchNetwork"]
