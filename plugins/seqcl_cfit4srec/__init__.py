"""Shipped plugin: CFIT4SRec (Zhang et al., WSDM 2023) — augmenter ``cfit4srec``.

Frequency-domain views (low-pass, high-pass, band-stop on the 2-D spectrum of the pre-dropout
embedding), six extra Transformer passes, and NT-Xent on the flattened (B, T·d) hidden sequences
through the generic ``cl`` term. Details and what differs from the official code: :mod:`.augmenter`.

    seqcl train --augmenter cfit4srec --dataset ../shared/data/Beauty.txt
"""

from __future__ import annotations

from seqcl.hookspecs import hookimpl

from .augmenter import CFIT4SRecAugmenter, CFIT4SRecOptions
from .filters import band_stop, band_stops, frequency_filter, high_pass, low_pass, radius

__all__ = ["CFIT4SRecAugmenter", "CFIT4SRecOptions", "band_stop", "band_stops", "frequency_filter",
           "high_pass", "low_pass", "radius"]


@hookimpl
def register_augmenters(register):
    register("cfit4srec", CFIT4SRecAugmenter, "CFIT4SRec: low/high-pass and band-stop views of the embedding "
             "spectrum, NT-Xent on flattened (B, T*d) outputs", options=CFIT4SRecOptions)
