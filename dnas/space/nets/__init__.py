"""Derived (evaluation) networks built from genotypes."""

from dnas.space.base import build_eval_network
from dnas.space.nets.darts import AuxHeadCIFAR, AuxHeadImageNet, DartsCIFARNetwork, DartsImageNetNetwork

__all__ = ["DartsCIFARNetwork", "DartsImageNetNetwork", "AuxHeadCIFAR", "AuxHeadImageNet", "build_eval_network"]
