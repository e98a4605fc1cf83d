"""Shipped plugin: the SASRec encoder (``sasrec``) and the ``none`` augmenter (plain SASRec)."""

from __future__ import annotations

from seqcl.hookspecs import hookimpl
from seqcl.interfaces import Augmenter

from .encoder import SASRec, SASRecOptions


class NoAugmentation(Augmenter):
    """No views, no auxiliary terms: the model trains on the main loss alone."""

    default_terms = {}
    pairs = []  # declared, so a term that needs pairs is rejected when the config is resolved

    def __init__(self, options: None = None, context: object = None) -> None:
        super().__init__()


@hookimpl
def register_encoders(register):
    register(
        "sasrec",
        SASRec,
        "SASRec Transformer encoder (slot positions, post-LN blocks; SPEC §2)",
        options=SASRecOptions,
    )


@hookimpl
def register_augmenters(register):
    register(
        "none",
        NoAugmentation,
        "no augmentation: plain SASRec trained with the main loss",
    )
