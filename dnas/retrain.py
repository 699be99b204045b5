"""Train a derived architecture from scratch: the second phase of every NAS paper.

DARTS' CIFAR recipe (``train.py``): SGD momentum 0.9, lr 0.025 cosine to 0 over the
epochs (stepped per epoch), weight decay 3e-4, grad-norm clip 5, cutout 16, drop-path
probability ramped linearly from 0 to ``drop_path_prob``, auxiliary head weighted 0.4.
Checkpointed and resumable like the search.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx, struct

from dnas import genotype as G
from dnas.bilevel import cross_entropy
from dnas.checkpoint import Checkpointer, resume
from dnas.datasets import augment, batch_indices, get_dataset, normalize, steps_per_epoch
from dnas.metrics import MetricWriter, Progress
from dnas.nets import build_eval_network
from dnas.parallel import make_mesh, replicate, shard_batch
from dnas.state import build_jitted, compile_then_trim, release_free_memory, step_compiler_options


@struct.dataclass
class TrainState:
    """Weights, BatchNorm statistics, optimizer state, step and PRNG key."""

    step: jax.Array
    weights: nnx.State
    stats: nnx.State
    opt: optax.OptState
    rng: jax.Array


def run_train(config: ml_collections.ConfigDict, workdir: str | Path, *, log: Callable[[str], None] = print) -> dict[str, float]:
    """Trains ``config.genotype`` and returns ``{"test_acc", "test_loss"}`` (also in
    ``workdir/result.json``)."""
    from dnas.loop import prepare_workdir

    workdir = Path(workdir)
    config = prepare_workdir(workdir, config)
    geno = G.get(config.genotype)
    data = get_dataset(config.dataset, config.data_dir or None)
    data = data.subset(config.max_train_examples or None, config.max_test_examples or None)
    h, w, c = data.image_shape
    spe = steps_per_epoch(len(data.train_y), config.batch_size)
    total = config.max_steps or config.epochs * spe
    k_model, k_state, data_key = jax.random.split(jax.random.key(config.seed), 3)
    net = build_jitted(
        lambda r: build_eval_network(geno, "cifar", config.init_channels, config.layers, data.num_classes, config.auxiliary, c, rngs=r), k_model
    )
    net.train()
    graphdef, weights, stats = nnx.split(net, nnx.Param, nnx.BatchStat)
    cosine = optax.cosine_decay_schedule(config.lr, max(config.epochs, 1))
    opt = optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.add_decayed_weights(config.weight_decay),
        optax.inject_hyperparams(optax.sgd)(learning_rate=lambda s: cosine(s // spe), momentum=config.momentum),
    )
    mesh = make_mesh(config.devices)
    state = replicate(mesh, TrainState(jnp.zeros((), jnp.int32), weights, stats, opt.init(weights), k_state))
    mean, std = data.mean, data.std
    pad = max(1, h // 8)
    epochs = config.epochs

    def train_step(state: TrainState, x, y):
        key = jax.random.fold_in(state.rng, state.step)
        x = augment(jax.random.fold_in(key, 0), normalize(x, mean, std), pad=pad, cutout=config.cutout)
        epoch = state.step // spe
        drop = config.drop_path_prob * epoch / epochs

        def loss_fn(weights):
            m = nnx.merge(graphdef, weights, state.stats, copy=True)
            logits, aux = m(x, key=jax.random.fold_in(key, 1), drop_prob=drop)
            loss = cross_entropy(logits, y)
            if aux is not None:
                loss = loss + config.auxiliary_weight * cross_entropy(aux, y)
            return loss, (nnx.state(m, nnx.BatchStat), logits)

        (loss, (stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.weights)
        updates, opt_state = opt.update(grads, state.opt, state.weights)
        metrics = {"train_loss": loss, "train_acc": jnp.mean(jnp.argmax(logits, -1) == y)}
        return state.replace(step=state.step + 1, weights=optax.apply_updates(state.weights, updates), stats=stats, opt=opt_state), metrics

    net.eval()
    eval_graphdef = nnx.graphdef(net)

    def eval_step(state: TrainState, x, y, valid):
        m = nnx.merge(eval_graphdef, state.weights, state.stats, copy=True)
        logits, _ = m(normalize(x, mean, std))
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum((jnp.argmax(logits, -1) == y) * valid), jnp.sum(losses * valid)

    opts = step_compiler_options()
    train_jit, eval_jit = jax.jit(train_step, donate_argnums=(0,), compiler_options=opts), jax.jit(eval_step, compiler_options=opts)
    ckpt = Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
    metrics = MetricWriter(workdir / "metrics.jsonl")
    state = resume(ckpt, state, (metrics,), log)
    start = int(state.step)
    log(f"train: {geno} on {config.dataset} ({len(data.train_y)} train / {len(data.test_y)} test), {total} steps")
    progress = Progress(total, start)
    try:
        for step in range(start, total):
            idx = batch_indices(data_key, len(data.train_y), config.batch_size, step)
            batch = shard_batch(mesh, (data.train_x[idx], data.train_y[idx]))
            if step == start:  # every batch has the same shapes and shardings
                train_jit = compile_then_trim(train_jit, state, *batch)
            state, m = train_jit(state, *batch)
            if step == start:
                release_free_memory()
            done = step + 1
            if done % config.log_every_steps == 0 or done == total:
                m = jax.device_get(m)
                metrics.write({"step": done, **m})
                progress.update(done, f"loss {m['train_loss']:.3f}")
            if done % config.checkpoint_every_steps == 0 or done == total:
                ckpt.save(done, state)
    finally:
        progress.close()
        ckpt.close()
    n_dev = mesh.devices.size
    bs = max(n_dev, (min(256, len(data.test_y)) // n_dev) * n_dev)
    correct, loss_sum, n = 0, 0.0, len(data.test_y)
    for i in range(0, n, bs):
        x, y = data.test_x[i : i + bs], data.test_y[i : i + bs]
        valid = np.ones(bs, np.float32)
        if len(y) < bs:  # pad the last batch; padded examples are masked out
            valid[len(y) :] = 0
            x = np.concatenate([x, np.zeros((bs - len(y),) + x.shape[1:], x.dtype)])
            y = np.concatenate([y, np.zeros(bs - len(y), y.dtype)])
        cnt, ls = eval_jit(state, *shard_batch(mesh, (x, y, valid)))
        correct, loss_sum = correct + int(cnt), loss_sum + float(ls)
    result = {"test_acc": correct / max(n, 1), "test_loss": loss_sum / max(n, 1), "test_examples": n, "steps": total}
    (workdir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    metrics.write({"step": total, "event": "test", **result})
    return result
