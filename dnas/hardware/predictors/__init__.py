"""Performance predictors for any target (accuracy, latency, energy) and few-shot transfer.

Why here, in ``hardware``: a latency :class:`~dnas.hardware.cost_model.CostModel` must be
able to load a fitted predictor, and the layering (core < data < space < hardware <
estimate < search ...) lets ``hardware`` import only ``space`` and below. The models
depend on nothing above ``space`` (encodings of its vectors), so accuracy predictors in
``estimate`` or ``search`` import them from here, downwards.

- :mod:`.graphs`: :class:`Encoded` batches (DAG, one-hot, counts, extra features), NB201's
  BRP-NAS graph, op-sequence graphs for other spaces.
- :mod:`.models`: ``gcn``, ``mlp``, ``ridge``, ``xgboost``, ``flops``, ``params`` behind
  one contract (:data:`MODELS`).
- :mod:`.transfer`: pretrain on source devices, adapt with a few target samples.
"""

from dnas.hardware.predictors.graphs import Encoded, encode, flops_params, nb201_graph, sequence_graph
from dnas.hardware.predictors.models import MODELS, GCNPredictor, MLPEnsemble, Model, RidgePredictor
from dnas.hardware.predictors.transfer import TransferPredictor
from dnas.hardware.predictors.export import ExportedPredictor, basis

__all__ = ["Encoded", "ExportedPredictor", "GCNPredictor", "MLPEnsemble", "MODELS", "Model", "RidgePredictor", "TransferPredictor", "basis", "encode", "flops_params",
           "nb201_graph", "sequence_graph"]
