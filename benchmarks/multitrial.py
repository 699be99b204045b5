"""Benchmark: many regularized-evolution runs on the NAS-Bench-201 table, as one vmapped
JAX program vs the same search as a plain Python loop (the benchmark's ``R_EA.py``).

Usage:
  python benchmarks/multitrial.py [--runs 500] [--budget 12000] [--repeats 3]
      [--python-runs 500] [--table PATH] [--json OUT] [--cache-dir DIR]

The JAX side is dnas' own driver program (``dnas.run.multitrial.make_search``, vmapped over
``--runs`` seeds): compile time, then the median of ``--repeats`` timed calls. The Python
side follows NAS-Bench-201's ``exps/algos/R_EA.py``: a ``collections.deque`` population
of genotype objects, ``random.choice`` tournaments, ``deepcopy`` + one-op mutation, and a
query by the architecture string; its query is a dict lookup of ``(reward, cost)`` rather
than the benchmark API's ``get_more_info`` (which builds an info dict per query), so the
Python time is a lower bound and the ratio conservative. ``--cache-dir`` turns on JAX's
persistent compilation cache there (as ``dnas`` does by default): run twice, the second
run's ``compile_s`` is a warm start. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import statistics
import sys
import time
from copy import deepcopy
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


class Cell:
    """NAS-Bench-201's ``CellStructure`` in miniature: nodes of (op, input) pairs."""

    def __init__(self, nodes):
        self.nodes = list(nodes)

    def tostr(self) -> str:
        return "+".join("|" + "|".join(f"{op}~{i}" for op, i in node) + "|" for node in self.nodes)


def python_rea(table: dict, rng: random.Random, budget: float, population: int = 10, sample_size: int = 3) -> tuple[str, int]:
    """One REA run as ``R_EA.py`` writes it; returns (chosen arch_str, evaluations)."""

    def random_arch():
        return Cell(tuple((rng.choice(OPS), j) for j in range(i)) for i in range(1, 4))

    def mutate(parent):
        child = deepcopy(parent)
        node_id = rng.randint(0, len(child.nodes) - 1)
        node = list(child.nodes[node_id])
        k = rng.randint(0, len(node) - 1)
        op = rng.choice(OPS)
        while op == node[k][0]:
            op = rng.choice(OPS)
        node[k] = (op, node[k][1])
        child.nodes[node_id] = tuple(node)
        return child

    pop, history, spent = collections.deque(), [], 0.0
    while len(pop) < population:
        arch = random_arch()
        acc, cost = table[arch.tostr()]
        pop.append((arch, acc))
        history.append((arch, acc))
        spent += cost
    while spent < budget:
        sample = [rng.choice(list(pop)) for _ in range(sample_size)]
        parent = max(sample, key=lambda m: m[1])
        child = mutate(parent[0])
        acc, cost = table[child.tostr()]
        if spent + cost > budget:
            break
        spent += cost
        pop.append((child, acc))
        history.append((child, acc))
        pop.popleft()
    return max(history, key=lambda m: m[1])[0].tostr(), len(history)


def main(argv: list[str] | None = None) -> dict:
    """Runs both searches; prints (and with ``--json`` writes) the timings and accuracies."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--python-runs", type=int, default=500)
    p.add_argument("--budget", type=float, default=12000.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--table", default=os.environ.get("DNAS_NB201_TABLE", ""))
    p.add_argument("--json", default="")
    p.add_argument("--cache-dir", default="")
    args = p.parse_args(argv)

    import jax

    if args.cache_dir:
        jax.config.update("jax_compilation_cache_dir", args.cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    import numpy as np

    from dnas.data.datasets import shared_data
    from dnas.search.multitrial import build, make_search
    from dnas.run.multitrial import multitrial_defaults

    c = multitrial_defaults()
    c.table = args.table or shared_data("nb201", "nb201_table.csv")
    c.runs = c.runs_per_chunk = args.runs
    c.budget_s = args.budget
    b = build(c)
    search, _ = make_search(b, args.budget, 0)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jax.numpy.arange(args.runs))
    t = time.perf_counter()
    program = jax.jit(search).lower(keys).compile()
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        h = jax.block_until_ready(program(keys))
        times.append(time.perf_counter() - t)
    chosen = np.asarray(h.archs)[np.arange(args.runs), np.argmax(np.where(np.arange(h.archs.shape[1]) < np.asarray(h.count)[:, None], np.asarray(h.fitness), -np.inf), 1)]
    metrics, _ = b.estimator.evaluate(jax.numpy.asarray(chosen), None)
    jax_test = np.asarray(metrics["cifar10_test_200ep"])

    # The Python loop reads the same table through the same estimator's columns.
    from dnas.estimate.nb201_table import load_table, table_path

    path = os.path.abspath(table_path(c.table))
    names, values, row_of_code = load_table(path, os.path.getmtime(path))
    space = b.space
    radix = np.array([5**5, 5**4, 5**3, 5**2, 5, 1])
    vecs = np.stack(np.unravel_index(np.arange(5**6), (5,) * 6), 1)
    table, test_of = {}, {}
    for v in vecs:
        row = row_of_code[int(v @ radix)]
        s = b.estimator.describe(v)
        table[s] = (float(values[row, names.index("cifar10_val_12ep")]), float(values[row, names.index("cifar10_valid_12ep_time_s")]))
        test_of[s] = float(values[row, names.index("cifar10_test_200ep")])
    del space
    t = time.perf_counter()
    py = [python_rea(table, random.Random(seed), args.budget) for seed in range(args.python_runs)]
    python_s = (time.perf_counter() - t) * args.runs / args.python_runs
    py_test = np.array([test_of[s] for s, _ in py])

    out = {
        "runs": args.runs,
        "budget_s": args.budget,
        "jax": {"compile_s": compile_s, "run_s_median": statistics.median(times), "run_s_all": times, "total_s": compile_s + statistics.median(times),
                "test_acc_mean": float(jax_test.mean()), "test_acc_std": float(jax_test.std()), "evals_mean": float(np.asarray(h.count).mean())},
        "python": {"run_s": python_s, "runs_timed": args.python_runs, "test_acc_mean": float(py_test.mean()), "test_acc_std": float(py_test.std()),
                   "evals_mean": float(np.mean([n for _, n in py]))},
        "speedup_run": python_s / statistics.median(times),
        "speedup_incl_compile": python_s / (compile_s + statistics.median(times)),
        "cpu_count": os.cpu_count(),
        "jax_version": jax.__version__,
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
