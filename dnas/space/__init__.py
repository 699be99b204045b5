"""Search spaces: labelled choices (:mod:`dnas.space.base`), ops (:mod:`dnas.space.ops`),
mixed ops carrying α (:mod:`dnas.space.mixed`), relaxations (:mod:`dnas.space.relax`),
genotypes (:mod:`dnas.space.genotype`), the ready spaces (:mod:`dnas.space.spaces`) and the
derived networks (:mod:`dnas.space.nets`)."""
