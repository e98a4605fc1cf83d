"""Plugin: the GRU4Rec encoder (``gru4rec``), as RecBole implements it and the CL papers use it.

Model: item embedding (row 0 padding, rows 1..num_items, then the augmenter's
extra rows) → dropout → GRU (no biases) → Linear(GRU width → d). The user
representation is the output at the last slot; scores are dot products with
the item embedding table, trained with the ``ce`` objective by default.

Use::

    seqcl train --plugin seqcl_gru4rec --encoder gru4rec --set train.threads=1
    seqcl train --plugin seqcl_gru4rec --encoder gru4rec --augmenter crop --dataset Beauty.txt

(``--plugin`` is not needed once the package is installed: it registers the
``gru4rec`` entry point in the ``seqcl`` group.)

Options (section ``gru4rec``; defaults from RecBole's ``GRU4Rec.yaml``):

* ``hidden_size`` 64: d, the embedding width and the width of every view
  (RecBole's ``embedding_size``; the core calls it ``hidden_size``).
* ``gru_size`` 128: the GRU state width (RecBole's ``hidden_size``).
* ``num_layers`` 1: stacked GRU layers.
* ``dropout`` 0.3: dropout on the item embeddings.

Padding is handled exactly: the GRU runs over each row's real items only
(a ``PackedSequence`` built from the left-padded window), so the output at the
last slot equals a GRU over that sequence alone, however much padding there is
and whatever the padding slots of ``H_in`` hold (ACLSRec perturbs them).
``tests/plugins/test_gru4rec.py`` checks this against a per-sequence loop of
the GRU equations written out by hand.

Every shipped augmenter works with it, since they use only the Encoder
interface: ``none``; CL4SRec's ``crop``, ``mask`` (its mask token is an extra
embedding row), ``reorder``, ``random`` (views re-encoded with ``encode``);
DuoRec's ``dropout`` (the second view is another embedding-dropout sample);
``aclsrec`` (its perturbation MLP acts on ``H_in``, the shared GRU then runs
twice). Under ACLSRec's ``sequence`` scope the MLP reads every slot of ``H``;
a leading padding slot holds the dense layer applied to the GRU's initial
state (its bias). SASRec's packing switch (``dense_layout``) does not exist
here: the core only sets it on encoders that have it.
"""

from __future__ import annotations

from seqcl.hookspecs import hookimpl

from .encoder import GRU4Rec, GRU4RecOptions, pack_layout

__all__ = ["GRU4Rec", "GRU4RecOptions", "pack_layout"]


@hookimpl
def register_encoders(register):
    register(
        "gru4rec",
        GRU4Rec,
        "GRU4Rec: embedding, dropout, GRU over the real items (packed), dense layer (RecBole's defaults)",
        options=GRU4RecOptions,
    )
