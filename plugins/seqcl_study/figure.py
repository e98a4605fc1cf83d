"""Saving a study figure: the PNG carries its plotted numbers as JSON in its ``Description``
text chunk (``PIL.Image.open(p).text["Description"]``), so a test or a reader can check a
plot against the tables without reading pixels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save_png(fig: Any, path: Path, data: dict[str, Any]) -> Path:
    """Write ``fig`` to ``path`` with ``data`` embedded, close it, return the path."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Description": json.dumps(data)})
    plt.close(fig)
    return path
