"""The ``dnas`` command: one module per subcommand, assembled by :mod:`dnas.cli.main`."""
