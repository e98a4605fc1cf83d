"""``seqcl data get NAME``: download a benchmark data set from its publisher and preprocess it."""

from __future__ import annotations

import difflib
from pathlib import Path

import click

from seqcl.errors import ConfigError

from .sources import SOURCES, Source


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


def _source(name: str) -> Source:
    if name in SOURCES:
        return SOURCES[name]
    hint = difflib.get_close_matches(name, list(SOURCES), n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ConfigError(f"unknown data set {name!r}{did_you_mean}; available: {', '.join(SOURCES)}")


@click.command("get")
@click.argument("name")
@click.option("--from", "origin", metavar="PATH|URL",
              help="Read this local file (or download this URL) instead of the publisher's URL.")
@click.option("--mirror", metavar="URL",
              help="Download the publisher's file name from this URL prefix instead (checksums still apply).")
@click.option("--force", is_flag=True, help="Preprocess again even if the output exists (the download is reused).")
def get(name: str, origin: str | None, mirror: str | None, force: bool) -> None:
    """Download data set NAME from its publisher, check it, preprocess it; print the output file.

    NAME: beauty, sports, toys (Amazon 2014 5-core reviews, McAuley), yelp
    (needs --from: Yelp has no direct URL), ml-1m, ml-100k (GroupLens).
    Files go to the data home ($SEQCL_DATA, default $XDG_CACHE_HOME/seqcl/data, else ~/.cache/seqcl/data):
    downloads/ keeps the publisher's file (never downloaded twice); the
    one-line-per-user result is Beauty.txt, Sports_and_Outdoors.txt,
    Toys_and_Games.txt, Yelp.txt, ml-1m.txt or ml-100k.txt. The download needs network access.
    Train on it with: seqcl train --dataset "$(seqcl data get beauty)".
    """
    from seqcl.data.loading import describe, format_stats

    from .download import data_home, fetch, verify
    from .prepare import preprocess, read_raw, write_sequences

    source = _source(name)
    home = data_home()
    output = home / f"{source.output}.txt"
    if output.is_file() and not force:
        _echo_err(f"{source.name}: already prepared ({output})")
        click.echo(str(output))
        return
    remote = source.remote
    if origin is not None and not origin.startswith(("http://", "https://")):
        raw_path = Path(origin).expanduser()
        if not raw_path.is_file():
            raise ConfigError(f"--from {origin}: file not found")
        if remote is not None and raw_path.name == remote.filename:
            verify(raw_path, remote.sha256, remote.md5, _echo_err)  # the publisher's file: check it
    else:
        if remote is None and origin is None:
            raise ConfigError(f"{source.name}: {source.manual}")
        url = origin or remote.url
        if mirror and origin is None:
            url = mirror.rstrip("/") + "/" + remote.filename
        filename = url.rstrip("/").rsplit("/", 1)[-1]
        pinned = remote is not None and filename == remote.filename
        raw_path = fetch(url, home / "downloads" / filename, remote.sha256 if pinned else None,
                         remote.md5 if pinned else None, _echo_err)
    _echo_err(f"{source.name}: reading {raw_path}" + (f" ({source.member})" if source.member else ""))
    raw = read_raw(source, raw_path)
    data, report = preprocess(source, raw)
    _echo_err(f"{source.name}: {report.summary()}")
    write_sequences(data, output)
    stats = describe(data)
    _echo_err(f"{source.name}: {format_stats(stats)}")
    if source.published is not None:
        ours = (stats["users"], stats["items"], stats["actions"])
        same = "the same" if ours == source.published else "DIFFERENT"
        _echo_err(f"{source.name}: published by {source.published_by}: users {source.published[0]} | "
                  f"items {source.published[1]} | actions {source.published[2]} -> {same}")
    click.echo(str(output))
