"""Data parallel on 4 fake CPU devices equals one device at the same global batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dnas.search.bilevel import darts_alpha_optimizer, darts_weight_optimizer, make_search_step
from dnas.run.parallel import make_mesh, replicate, shard_batch
from dnas.space.spaces import DartsSearchNetwork, DartsSpace
from dnas.search.state import init_search_state


@pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 (fake) devices: XLA_FLAGS=--xla_force_host_platform_device_count=4")
@pytest.mark.parametrize("order", [1, 2])
def test_sharded_step_equals_single_device(order):
    space = DartsSpace(layers=1, nodes=2, ops=("none", "skip_connect", "sep_conv_3x3", "avg_pool_3x3"))
    net = DartsSearchNetwork(space, C=4, num_classes=3, rngs=nnx.Rngs(0))
    w_opt, a_opt = darts_weight_optimizer(), darts_alpha_optimizer()
    g, state = init_search_state(net, w_opt, a_opt, key=jax.random.key(0))
    step = jax.jit(make_search_step(g, w_opt, a_opt, order=order).__call__)
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(8, 8, 8, 3)).astype(np.float32), rng.integers(0, 3, 8).astype(np.int32)) for _ in range(4)]

    single = state
    for i in range(2):
        single, m1 = step(single, batches[2 * i], batches[2 * i + 1])

    mesh = make_mesh(4)
    sharded = replicate(mesh, state)
    for i in range(2):
        tb, vb = shard_batch(mesh, batches[2 * i]), shard_batch(mesh, batches[2 * i + 1])
        assert len(tb[0].sharding.device_set) == 4
        sharded, m4 = step(sharded, tb, vb)

    for a, b in zip(jax.tree_util.tree_leaves(single), jax.tree_util.tree_leaves(sharded)):
        if jnp.issubdtype(a.dtype, jnp.floating):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(float(m1["train_loss"]), float(m4["train_loss"]), rtol=1e-5)


def test_device_count_errors_are_clear():
    from dnas.core.errors import DnasError

    with pytest.raises(DnasError, match="devices"):
        make_mesh(len(jax.devices()) + 1)
    mesh = make_mesh(len(jax.devices()))
    if mesh.devices.size == 1:
        pytest.skip("one device: every batch divides; the divisibility error needs several (conftest fakes 4)")
    with pytest.raises(DnasError, match="divisible"):
        shard_batch(mesh, np.zeros((mesh.devices.size + 1, 2)))


def test_each_host_feeds_its_own_rows_of_the_global_batch():
    """Multi-host: every host builds the same global batch from (key, step); each must feed
    only its rows, or the global batch holds every example process_count times."""
    from dnas.core.errors import DnasError
    from dnas.run.parallel import host_rows

    rows = [host_rows(12, i, 3) for i in range(3)]
    assert [(r.start, r.stop) for r in rows] == [(0, 4), (4, 8), (8, 12)]
    covered = sorted(i for r in rows for i in range(12)[r])
    assert covered == list(range(12))
    with pytest.raises(DnasError, match="does not split over 3 hosts"):
        host_rows(10, 0, 3)
