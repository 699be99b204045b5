"""``dnas launch``: a dnas command as several processes on this machine (one JAX program)."""

from __future__ import annotations

import argparse

from dnas.run.launch import launch


def cmd_launch(args: argparse.Namespace) -> int:
    """Starts the processes, waits for them; returns the launcher's exit code."""
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    return launch(command, args.processes, devices_per_process=args.devices_per_process, cpu=args.cpu, port=args.port)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Adds ``launch`` to the ``dnas`` command's subparsers."""
    helptext = "run a dnas command as several processes of one JAX program on this machine"
    sp = sub.add_parser(
        "launch",
        help=helptext,
        description=f"{helptext} (coordinator on localhost; on a cluster use its launcher, e.g. srun, instead).",
        epilog="example: dnas launch --processes 2 --cpu -- search --config experiments/nb201/config.py:smoke --workdir runs/w",
    )
    sp.add_argument("--processes", type=int, required=True, help="number of processes")
    sp.add_argument("--devices-per-process", type=int, default=1, help="devices per process (on CPU: fake host devices; default 1)")
    sp.add_argument("--cpu", action="store_true", help="run on the CPU platform (JAX_PLATFORMS=cpu) even where a GPU/TPU exists")
    sp.add_argument("--port", type=int, default=0, help="the coordinator's port on localhost (default: a free one)")
    sp.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the dnas command, e.g. -- search --config C --workdir W")
    sp.set_defaults(fn=cmd_launch)
