"""Every snippet in the README runs: Python blocks are executed (in one namespace, in
order), and every ``dnas ...`` command line parses with the real CLI parser and names
files and configs that exist."""

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_python_snippets_run():
    import ml_collections

    from dnas.run.search import search_defaults

    from dnas.run.config import validate
    from dnas.space.ops import OPS
    from dnas.space.relax import RELAXATIONS, make_relaxation

    ns: dict = {"search_defaults": search_defaults}
    blocks = _blocks("python")
    assert len(blocks) >= 3
    for block in blocks:
        exec(compile(block, "README.md", "exec"), ns)  # noqa: S102 - our own README
    assert "conv_5x5_example" in OPS and "perturbed_softmax_example" in RELAXATIONS
    import jax
    import jax.numpy as jnp

    w = make_relaxation("perturbed_softmax_example", {"epsilon": 0.1})(jax.random.key(0), jnp.zeros(3), jnp.int32(0))
    assert abs(float(w.sum()) - 1) < 1e-6
    c = ns["c"]
    assert isinstance(c, ml_collections.ConfigDict)
    with c.unlocked():
        c.dataset = "digits"
        c.imports = [str(ROOT / p) for p in c.imports]
    validate(c)  # the README's config snippet is a valid config once its files are imported


@pytest.mark.parametrize("line", [l for b in _blocks("bash") for l in b.splitlines() if l.startswith("dnas ")])
def test_command_lines_parse(line):
    """Synopsis lines are parsed without their optional [...] parts."""
    from dnas.cli.common import split_overrides as _split_overrides
    from dnas.cli.main import build_parser

    while "[" in line:  # drop optional parts, innermost first
        line = re.sub(r"\[[^\[\]]*\]", "", line)
    args = shlex.split(line)[1:]
    rest, _ = _split_overrides(args)
    if rest == ["--version"]:
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args(rest)
        assert e.value.code == 0
        return
    ns = build_parser().parse_args(rest)
    cfg = getattr(ns, "config", None)
    if cfg and cfg != "PATH":
        assert (ROOT / cfg.split(":")[0]).is_file(), cfg


def test_config_flags_in_the_readme_name_real_keys():
    """Every ``--config.X=Y`` the README shows names a key of a run kind's schema (inside a
    fixed group such as ``latency``, the group's own keys; inside a part's ``*_kwargs``, any
    name), and its placeholders (``KEY``, ``PART_kwargs.NAME``, ``GROUP.NAME``) are spelt as
    ``--help`` spells them (the README once said ``GROUP_kwargs.NAME``, the help ``GROUP.NAME``)."""
    import ml_collections

    import dnas.run.multitrial  # noqa: F401 - registers the multitrial kind
    import dnas.run.search  # noqa: F401
    import dnas.run.train  # noqa: F401
    from dnas.cli.common import keys_epilog
    from dnas.run.config import RUN_KINDS

    flags = sorted(set(re.findall(r"--config\.([A-Za-z_][A-Za-z0-9_.]*)=", README)))
    assert len(flags) >= 8
    schemas = [RUN_KINDS[k].defaults() for k in RUN_KINDS]
    epilog = keys_epilog("search")
    for flag in flags:
        parts = flag.split(".")
        if any(p.isupper() or p.split("_")[0].isupper() for p in parts):  # a placeholder
            assert f"--config.{flag}=" in epilog, f"README's --config.{flag} is not how --help spells it"
            continue
        found = False
        for schema in schemas:
            node, ok = schema, True
            for i, p in enumerate(parts):
                if not isinstance(node, ml_collections.ConfigDict) or p not in node:
                    ok = i > 0 and parts[i - 1].endswith("_kwargs")  # a part's arguments are free names
                    break
                node = node[p]
            found = found or ok
        assert found, f"README's --config.{flag} names no config key"
