"""A fitted GCN predictor saved, loaded and used as a cost model (dnas.hardware.predictors.export)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dnas.cli.main import main
from dnas.core.errors import DnasError
from dnas.hardware.cost_model import build_cost_model
from dnas.hardware.predictors import encode
from dnas.hardware.predictors.export import ExportedPredictor
from dnas.hardware.predictors.models import GCN, GCNPredictor
from dnas.hardware.predictors.transfer import TransferPredictor
from dnas.space.spaces.nb201 import NB201Space


def _stack(mods):
    return jax.tree.map(lambda *a: jnp.stack(a), *[nnx.state(m, nnx.Param) for m in mods])


def _predictors(space, vecs):
    """A 2-member GCN as fit() leaves it, and a transfer predictor adapted on 10 rows (its
    pretrained GCN set directly: the export reads weights, not how they were trained)."""
    x = encode(space, vecs)
    gcn = GCNPredictor(hidden=8, layers=1, members=2)
    mods = [GCN(7, 8, 1, 1, rngs=nnx.Rngs(k)) for k in (0, 1)]
    gcn.graphdef, gcn.params, gcn.y_mean, gcn.y_std, gcn.head = nnx.graphdef(mods[0]), _stack(mods), 3.0, 2.0, None
    y = 1.0 + (vecs == 3).sum(1) + 0.5 * (vecs == 2).sum(1)
    tp = TransferPredictor(x, np.stack([y, 2 * y + (vecs == 1).sum(1)], 1), gcn=dict(hidden=8, layers=1))
    src = GCN(7, 8, 1, 2, rngs=nnx.Rngs(2))
    tp.gcn.pretrained = (nnx.graphdef(src), nnx.state(src, nnx.Param), np.zeros(2), np.ones(2))
    tp.fit(x.take(np.arange(10)), 3 * y[:10], jax.random.key(0))
    return x, {"gcn": gcn, "transfer": tp}


def test_saved_gcn_prices_like_the_fitted_one_eager_and_jitted(tmp_path):
    space = NB201Space()
    vecs = np.random.default_rng(0).integers(0, 5, (16, 6)).astype(np.int32)
    x, preds = _predictors(space, vecs)
    for name, p in preds.items():
        want = p.predict(x)
        path = tmp_path / f"{name}.json"
        ExportedPredictor.of(p, space).save(path)
        assert np.allclose(ExportedPredictor.load(path).predict(space, vecs), want, rtol=1e-5), name
        model = build_cost_model("gcn", space, {"predictor": str(path)})
        eager = np.asarray(model.cost(vecs)["latency_ms"])
        jitted = np.asarray(jax.jit(lambda a: model.cost(a)["latency_ms"])(jnp.asarray(vecs)))
        assert np.allclose(eager, want, rtol=1e-5) and np.allclose(jitted, eager, rtol=1e-5), name
        # α-softmax probabilities in place of one-hots: a differentiable latency.
        logits = jax.random.normal(jax.random.key(1), (6, 5))
        grad = jax.grad(lambda a: model.cost(jax.nn.softmax(a))["latency_ms"])(logits)
        assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0, name


def test_save_is_for_gcn_only(tmp_path, capsys):
    csv = tmp_path / "t.csv"
    space = NB201Space()
    rows = [space.arch_str(v) for v in np.random.default_rng(0).integers(0, 5, (12, 6))]
    csv.write_text("arch,y\n" + "".join(f"{a},{i + 1}\n" for i, a in enumerate(dict.fromkeys(rows))))
    rc = main(["predictor", "fit", "--space", "nb201", "--csv", str(csv), "--arch-column", "arch", "--target-column", "y", "--train", "5",
               "--model", "ridge", "--save", str(tmp_path / "p.json")])
    assert rc == 2 and "--save writes gcn predictors" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["gcn", "predictor"])
def test_an_unset_predictor_file_is_named_with_its_fix(model):
    """experiments/help_nb201 leaves the predictor file to the user: unset, it is one line
    naming the key and the command that writes the file (it used to say "'.' is a folder")."""
    from dnas.hardware import cost_models
    from dnas.space.spaces.nb201 import NB201Space

    with pytest.raises(DnasError, match=r"needs a fitted predictor file: set its cost_model_kwargs.predictor=F.*--save F"):
        getattr(cost_models, model)(NB201Space(layers=1), "")
