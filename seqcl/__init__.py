"""seqcl — contrastive learning for sequential recommendation, as plugins.

The Python API (docs/api.md)::

    import seqcl
    run = seqcl.train({"dataset": "builtin", "train.epochs": 5})   # or seqcl.load_run("runs/…")
    run.recommend([["12", "7", "33"]], k=10)                       # original item ids in and out

Imported on first use, so ``import seqcl`` (and the CLI) stay light: torch is
loaded only when the API is.
"""

__version__ = "0.1.0"
__all__ = ["Run", "load_run", "train"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from seqcl import api

        return getattr(api, name)
    raise AttributeError(f"module 'seqcl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
