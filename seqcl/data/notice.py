"""One-line warnings on stderr, each at most once per process.

Why not ``logging``: nothing installs a handler, and these are for the user —
a run that goes on in a degraded way (a cache that cannot be written, a file
without timestamps) must say so visibly, but once, not on every load.
"""

from __future__ import annotations

import sys

_seen: set[str] = set()


def warn_once(message: str, key: str | None = None) -> bool:
    """Print ``warning: <message>`` on stderr unless ``key`` (default: the message) was warned already."""
    key = message if key is None else key
    if key in _seen:
        return False
    _seen.add(key)
    print(f"warning: {' '.join(message.split())}", file=sys.stderr, flush=True)
    return True


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line (torch's messages span several lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_error(exc: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in words a user can act on.

    torch's own messages are long and suggest ``weights_only=False``, which is
    exactly what must not be done with a file of unknown origin.
    """
    import pickle

    if isinstance(exc, pickle.UnpicklingError):
        return "not a plain tensor file: refused by weights-only loading"
    if isinstance(exc, EOFError):
        return "empty or truncated"
    return one_line(exc).split(". ")[0]  # torch appends paragraphs of advice after the first sentence
