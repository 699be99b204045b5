"""Convolution gradients inside conditionals and loops on XLA CPU: dnas' canonical-form
VJP and rematerialised switch branches against JAX's own rules.

Usage:
  python benchmarks/conv_grad.py [--C 8] [--hw 32] [--batch 64] [--space-C 16] [--layers 5]
      [--repeats 2] [--iters 10] [--json OUT]

Two measurements, each variant in a fresh subprocess, variants alternating ``--repeats``
times (medians reported):

- ``micro``: the kernel and input gradient of one 3x3 convolution (``C -> C``, batch
  ``B``, ``hw x hw``) at the top level of a jitted function, inside a ``lax.switch``
  branch and inside a ``lax.scan`` body; JAX's transpose rules (``jax.vjp`` of
  ``lax.conv_general_dilated``) against :func:`dnas.space.ops.layers.conv2d`.
- ``supernet``: the weight gradient of the NB201 supernet (``space-C``, ``layers``) in
  index mode (one ``lax.switch`` per edge: SPOS/RSPS training, zero-cost proxies) on
  random cells. Variants: ``dnas`` (as shipped), ``no_remat`` (switch branches not
  rematerialised), ``jax_rules`` (also JAX's convolution gradients: dnas before the fix).
  The variants are made by replacing two module attributes in the subprocess.

Prints one JSON object ``{"micro": {...ms...}, "supernet": {variant: {"compile_s",
"grad_ms_median"}}}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def _time(f, *args, iters: int) -> float:
    import jax

    jax.block_until_ready(f(*args))
    t0 = time.perf_counter()
    for _ in range(iters):
        jax.block_until_ready(f(*args))
    return 1e3 * (time.perf_counter() - t0) / iters


def micro(a: argparse.Namespace) -> dict:
    import jax
    import jax.numpy as jnp

    from dnas.space.ops.layers import conv2d

    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (a.batch, a.hw, a.hw, a.C))
    w = jax.random.normal(kw, (3, 3, a.C, a.C))
    ref = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))  # noqa: E731
    ours = lambda x, w: conv2d(x, w, 1, 1)  # noqa: E731
    dy = ref(x, w)
    out = {}
    for name, conv in (("jax_rules", ref), ("dnas", ours)):
        grads = lambda x, w, conv=conv: jax.vjp(conv, x, w)[1](dy)  # noqa: E731
        out[f"{name}_top_ms"] = _time(jax.jit(grads), x, w, iters=a.iters)
        out[f"{name}_switch_ms"] = _time(
            jax.jit(lambda x, w, i: jax.lax.switch(i, [lambda: (x * 0, w * 0), lambda: grads(x, w)])), x, w, jnp.int32(1), iters=a.iters
        )
        out[f"{name}_scan_ms"] = _time(
            jax.jit(lambda x, w: jax.lax.scan(lambda c, _: (jax.tree_util.tree_map(jnp.add, c, grads(x, w)), None), (x * 0, w * 0), None, length=2)[0]),
            x, w, iters=a.iters,
        ) / 2
    return out


def supernet(a: argparse.Namespace, variant: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    import dnas.space.mixed
    import dnas.space.ops.layers as layers
    from dnas.space.base import build_space

    if variant in ("no_remat", "jax_rules"):
        dnas.space.mixed._remat_branch = lambda i: (lambda ops, x: ops[i](x))
    if variant == "jax_rules":
        layers._conv_nhwc = layers._conv_nhwc.fun  # the same convolution, differentiated by JAX's rules
    space = build_space("nb201", a.layers, {})
    net = space.supernet(C=a.space_C, num_classes=10, in_channels=3, rngs=nnx.Rngs(0))
    gd, params, rest = nnx.split(net, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(1), (a.batch, a.hw, a.hw, 3))
    y = jnp.arange(a.batch, dtype=jnp.int32) % 10

    @jax.jit
    def grad(p, v):
        def loss(p):
            logits = nnx.merge(gd, p, rest, copy=True)(x, space.to_inputs(v)).logits
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

        return jax.grad(loss)(p)

    vecs = [jnp.asarray(v, jnp.int32) for v in np.random.RandomState(0).randint(0, 5, (a.iters + 1, len(space)))]
    t0 = time.perf_counter()
    jax.block_until_ready(grad(params, vecs[0]))
    compile_s = time.perf_counter() - t0
    times = []
    for v in vecs[1:]:
        t0 = time.perf_counter()
        jax.block_until_ready(grad(params, v))
        times.append(1e3 * (time.perf_counter() - t0))
    return {"compile_s": compile_s, "grad_ms_median": statistics.median(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--C", type=int, default=8)
    ap.add_argument("--hw", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--space-C", type=int, default=16)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default="")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(micro(a) if a.worker == "micro" else supernet(a, a.worker)))
        return
    args = [f"--C={a.C}", f"--hw={a.hw}", f"--batch={a.batch}", f"--space-C={a.space_C}", f"--layers={a.layers}", f"--iters={a.iters}"]

    def run(worker: str) -> dict:
        p = subprocess.run([sys.executable, __file__, *args, f"--worker={worker}"], capture_output=True, text=True)
        if p.returncode:
            raise SystemExit(f"worker {worker} failed:\n{p.stderr[-3000:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])

    variants = ("dnas", "no_remat", "jax_rules")
    runs: dict[str, list[dict]] = {v: [] for v in ("micro",) + variants}
    for _ in range(a.repeats):
        for v in ("micro",) + variants:
            runs[v].append(run(v))
    med = lambda rs: {k: statistics.median(r[k] for r in rs) for k in rs[0]}  # noqa: E731
    out = {"config": vars(a) | {"worker": None}, "micro": med(runs["micro"]), "supernet": {v: med(runs[v]) for v in variants}}
    base = out["supernet"]["dnas"]["grad_ms_median"]
    for v in variants:
        out["supernet"][v]["over_dnas"] = out["supernet"][v]["grad_ms_median"] / base
    print(json.dumps(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
