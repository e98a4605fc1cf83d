"""Shipped plugin: ``seqcl data get NAME`` — the field's benchmark data sets from their publishers.

Amazon 2014 Beauty, Sports_and_Outdoors, Toys_and_Games (McAuley's 5-core
review files), Yelp (from a file the user downloads: Yelp has no direct URL),
MovieLens-1M and -100K (GroupLens). :mod:`seqcl_datasets.sources` is the one
table of URLs and checksums; :mod:`seqcl_datasets.download` downloads into the
data home (``$SEQCL_DATA``) once, with a progress bar, checksums and a
temporary file renamed only when complete; :mod:`seqcl_datasets.prepare` reads
the raw records and runs the core's preprocessing (SPEC §1, 5-core) into the
one-line-per-user files the papers use. Steps and sources: ``docs/datasets.md``.

The command is added to the core's ``seqcl data`` group through ``register_commands``.
"""

from __future__ import annotations

from seqcl.hookspecs import hookimpl

from . import cli as commands


@hookimpl
def register_commands(cli):
    cli.commands["data"].add_command(commands.get)
