"""DARTS on a layer-wise chain space: the extension example of the README (a new space,
op and relaxation, each in a file of this folder; nothing else in dnas changed).

Command:
  dnas search --config experiments/layerwise/config.py --workdir runs/chain
  dnas search --config experiments/layerwise/config.py:smoke --workdir /tmp/w
  dnas search --config experiments/layerwise/config.py:smoke,perturbed --workdir /tmp/w   # the new relaxation

Setting: 4 positions over skip / sep_conv_3x3 / sep_conv_5x5 / dil_conv_3x3 / max_pool_3x3 /
conv_5x5 (the new op), C=16, first-order DARTS with its optimizers, 8x8 digits.
Expected result: no paper; a chain whose α prefers convolutions over skip on digits.
Run time: about a minute on 2 CPU cores (smoke: seconds after compile).
"""

from pathlib import Path

from dnas.run.search import search_defaults

HERE = Path(__file__).resolve().parent


def get_config(arg: str | None = None):
    flags = set((arg or "").split(",")) - {""}
    if flags - {"smoke", "perturbed"}:
        raise ValueError(f"unknown config arg(s) {sorted(flags - {'smoke', 'perturbed'})}; use smoke, perturbed")
    c = search_defaults()
    c.imports = [str(HERE / "space.py"), str(HERE / "extras.py")]
    c.space = "layerwise"
    c.space_kwargs.ops = ["skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "max_pool_3x3", "conv_5x5"]
    c.dataset = "digits"
    c.layers = 4
    c.epochs = 5
    c.batch_size = 32
    c.augment = False
    if "perturbed" in flags:
        c.relax = "perturbed_softmax"
        c.relax_kwargs.epsilon = 0.05
    if "smoke" in flags:
        c.init_channels, c.max_train_examples, c.max_steps, c.epochs = 4, 128, 4, 2
        c.log_every_steps, c.checkpoint_every_steps = 2, 2
    return c
