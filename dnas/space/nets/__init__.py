"""Derived (evaluation) networks built from genotypes."""

from dnas.space.nets.darts import AuxHeadCIFAR, AuxHeadImageNet, DartsCIFARNetwork, DartsImageNetNetwork, build_eval_network

__all__ = ["DartsCIFARNetwork", "DartsImageNetNetwork", "AuxHeadCIFAR", "AuxHeadImageNet", "build_eval_network"]
