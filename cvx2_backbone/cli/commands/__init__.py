"""Subcommands of the ``cvx2`` command line (see ``cvx2_backbone.cli.main``)."""
