"""The plugin contract: every hook a seqcl plugin may implement.

A plugin is any module or object with functions marked ``@hookimpl``; it is
found through the ``seqcl`` entry-point group (the shipped plugins under
``plugins/`` use the same mechanism) or loaded with ``--plugin some.module``.

Registration hooks follow simonw/llm's shape: the core passes a ``register``
callback, so it knows which plugin registered which name, can list it, and can
report a duplicate with both owners. Hooks are called once, at start-up, for
discovery only; a run then builds just the components it selected.

A plugin's registrations are staged and committed only if all its hooks
succeed: an installed plugin whose hook raises, or that registers a name
another plugin already owns, is reported in one line and skipped entirely
(``seqcl plugins`` lists it as ``broken``); a ``--plugin`` module fails loudly.

Training-loop hooks are not registration hooks: a built component takes part
in the loop by defining methods the core looks for — lifecycle callbacks
(``on_fit_start``, ``on_epoch_start``, ``after_optimizer_step``), an
optimisation plan (``optim_plan``), views of declared shapes
(``Augmenter.view_shapes``) — and an encoder may declare ``default_stages``.
``seqcl.interfaces`` ("Training-loop hooks") documents each, with an example;
:mod:`seqcl.lifecycle`, :mod:`seqcl.optimplan` and :mod:`seqcl.stages` run them.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("seqcl")
hookimpl = pluggy.HookimplMarker("seqcl")

#: ``register(name, factory, description, options=None)`` — see
#: :meth:`seqcl.registry.Registry.add`.
Register = Callable[..., None]


@hookspec
def register_encoders(register: Register) -> None:
    """Register sequence encoders (kind ``encoder``).

    Called once per plugin at start-up. Call ``register(name, factory,
    description, options=OptionsDataclass)`` for each encoder; ``factory(options,
    context)`` must return a :class:`seqcl.interfaces.Encoder`. Every
    implementation is called; names must be unique across all plugins.
    """


@hookspec
def register_augmenters(register: Register) -> None:
    """Register augmenters (kind ``augmenter``): what produces the views.

    Called once per plugin at start-up. ``factory(options, context)`` must
    return a :class:`seqcl.interfaces.Augmenter`. Every implementation is
    called; names must be unique across all plugins.

    Declare the view pairs before building, so loss terms are checked when the
    config is resolved (``--dry-run``) rather than when training starts: a
    ``pairs`` class attribute, or a class method ``pairs_for(options)`` when they
    depend on the options (see :func:`seqcl.registry.declared_pairs`).
    """


@hookspec
def register_loss_terms(register: Register) -> None:
    """Register auxiliary loss terms (kind ``loss_term``), e.g. ``cl``, ``align``.

    Called once per plugin at start-up. ``factory(options, context)`` must
    return a :class:`seqcl.interfaces.LossTerm`; ``options`` must be a dataclass
    with a float field ``weight``. Every implementation is called; names must be
    unique across all plugins.

    A term that cannot work with every augmenter gives its factory a
    ``check(options, augmenter)`` (static or class method) raising
    :class:`seqcl.errors.ConfigError`; ``augmenter`` is a
    :class:`seqcl.registry.AugmenterInfo` (``name``, declared ``pairs``). The core
    calls it when the config is resolved, if the augmenter declares its pairs.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add subcommands to the ``seqcl`` click group ``cli``.

    Called once per plugin when the CLI starts. Every implementation is called;
    one that raises loses the commands it added (and its plugin is skipped).
    """


@hookspec
def register_objectives(register: Register) -> None:
    """Register main training objectives (kind ``objective``), e.g. ``ce``, ``sampled``, ``cloze``.

    Called once per plugin at start-up. ``factory(options, context)`` must
    return a :class:`seqcl.interfaces.Objective`: the loss every training step
    minimises, to which the weighted loss terms are added. A run selects one
    with ``objective: NAME`` (``--objective``); its options are the config
    section named after it. The default is the encoder's ``default_objective``
    (``ce`` for SASRec, ``cloze`` for BERT4Rec). Every implementation is called;
    names must be unique across all plugins.

    Stages: an objective that is a pre-training stage (S3Rec's masked item
    prediction) is an ordinary objective; a run in stages (config ``stages``,
    or the encoder's ``default_stages``) names it for one stage and hands the
    encoder to the next (:mod:`seqcl.stages`), so no stage logic lives in an
    objective. Example, S3Rec's two stages as a config::

        encoder: s3rec
        stages:
          - {name: pretrain, objective: mip, epochs: 150,
             set: {s3rec.attention: bidirectional, train.batch_size: 100, train.patience: 150},
             handoff: [encoder], handoff_from: last}
          - {name: finetune, objective: ce, set: {s3rec.attention: causal}}

    (the s3rec plugin's ``DEFAULT_STAGES``: ``train.patience: 150`` keeps the
    pre-training stage from stopping early on a valid MRR that masked item
    prediction does not aim at, so it hands on its ``last`` epoch, the 150th).
    """


@hookspec
def register_loggers(register: Register) -> None:
    """Register run loggers (kind ``logger``): where training records go besides ``metrics.jsonl``.

    Called once per plugin at start-up. ``factory(context)`` gets a
    :class:`seqcl.loggers.LoggerContext` (run folder, resolved config, first
    step) when a run that enabled it starts, and returns a
    :class:`seqcl.loggers.Logger`; ``options`` is not used (a logger reads its
    own settings, e.g. an environment variable). A run enables loggers by name
    with ``run.loggers`` (``--logger NAME``); only those are built. Every
    implementation is called; names must be unique across all plugins. See
    ``docs/loggers.md`` (TensorBoard ships; W&B and MLflow are shown there).
    """
