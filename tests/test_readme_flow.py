"""The README's second step, ``dnas train --genotype RUN_DIR``, on 8x8 digits (the first
step's search and the retraining of its own genotype are
``tests/test_e2e.py::test_default_search_learns_an_architecture``).

That step used to die in XLA's tracing with a JAX TypeError: DARTS' CIFAR auxiliary
head pools 5x5 with stride 3, which assumes the 8x8 map of 32x32 CIFAR images, and the
retrained network on 8x8 digits hands it a 2x2 map. It also left its run directory behind.
"""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from dnas.cli.main import main


def test_an_impossible_auxiliary_head_is_refused_before_anything_is_written(tmp_path, capsys):
    """Digits pooled to 4x4 leave a 1x1 map at the head, too small for its 2x2 conv: asked
    for explicitly, the head is refused in one line (exit 2) and no run directory is made;
    left to ``dnas train --genotype``'s sizing, the head is turned off and that is said."""
    from dnas.cli.train import train_config_for

    work = tmp_path / "C"
    assert main(["train", "--genotype", "DARTS_V2", "--workdir", str(work), "--config.dataset=digits", "--config.downsample=2",
                 "--config.auxiliary=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "auxiliary head" in err and "1x1" in err and "--config.auxiliary=false" in err, err
    assert not work.exists()
    notes = []
    c = train_config_for("DARTS_V2", ["--config.dataset=digits", "--config.downsample=2"], log=notes.append)
    assert c.auxiliary is False and len(notes) == 1 and "auxiliary head off" in notes[0] and "1x1" in notes[0], notes


def test_a_train_that_fails_before_its_first_step_leaves_no_run_directory(tmp_path, monkeypatch):
    """An error between writing the run directory and the first step (here: building the
    network) removes what this run wrote; a directory that held something before keeps it."""
    import dnas.run.train as train_mod
    from dnas.run.train import train_defaults

    def broken(*args, **kwargs):
        raise RuntimeError("the network cannot be built")

    monkeypatch.setattr(train_mod, "build_eval_network", broken)
    c = train_defaults()
    c.dataset, c.init_channels, c.layers, c.max_steps = "digits", 4, 2, 1
    with pytest.raises(RuntimeError, match="cannot be built"):
        train_mod.run_train(c, tmp_path / "new", log=lambda m: None)
    assert not (tmp_path / "new").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("kept")
    with pytest.raises(RuntimeError, match="cannot be built"):
        train_mod.run_train(c, mine, log=lambda m: None)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("side", [2, 3, 4, 5, 7, 8, 14])
def test_auxiliary_head_runs_on_any_map_of_two_pixels_or_more(side):
    """The head pools the map to 2x2 before its 2x2 conv, whatever the map: DARTS' 5x5
    stride 3 on CIFAR's 8x8 map, 5x5 stride 2 on ImageNet's 7x7 map, identity on 2x2."""
    from dnas.space.nets.darts import AuxHeadCIFAR

    head = AuxHeadCIFAR(6, 10, rngs=nnx.Rngs(0))
    out = head(jax.random.normal(jax.random.key(0), (2, side, side, 6)))
    assert out.shape == (2, 10) and bool(jnp.isfinite(out).all())
    from dnas.space.nets.darts import aux_pool

    k, s = aux_pool(side)
    assert (side - k) // s + 1 == 2
    assert {8: (5, 3), 7: (5, 2), 2: (1, 1)}.get(side, (k, s)) == (k, s)
