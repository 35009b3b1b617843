"""Controllable generation: constraints on the latent, the gradient guidance that enforces
them, and classifier-free guidance for runs trained with a condition.

Every constraint is used through `Pipeline.generate` (the one way of sampling):

    import difflm
    from difflm import control
    pipe = difflm.load("runs/demo")
    length = control.Length(10, max_len=pipe.config.data.max_len)
    zizzi = control.Keywords(["Zizzi"], pipe.vocab)
    texts = pipe.sample(8, constraints=[length, zizzi], steps=50)
    # a run trained with --set model.condition=slots:
    texts = pipe.sample(8, condition={"food": "Italian"}, cfg_scale=3)

`FACTORIES` is the command line's registry of constraint kinds: a new constraint is one
class with a `from_spec` and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from difflm.control.classifier_constraints import POS, Attribute, ClassifierConstraint, Mentions, Span, Tree
from difflm.control.classifier_free import ClassifierFreeGuidance, Expresses, condition_of
from difflm.control.constraints import Checkable, Infill, Keywords, Length, RequiresWords, RestrictsWords
from difflm.control.guidance import OPTIMIZERS, Constraint, FixesPositions, GradientGuidance
from difflm.control.specs import SpecContext
from difflm.text.vocab import Vocab

__all__ = [
    "FACTORIES",
    "OPTIMIZERS",
    "POS",
    "Attribute",
    "Checkable",
    "ClassifierConstraint",
    "ClassifierFreeGuidance",
    "Constraint",
    "Expresses",
    "FixesPositions",
    "GradientGuidance",
    "Infill",
    "Keywords",
    "Length",
    "Mentions",
    "RequiresWords",
    "RestrictsWords",
    "Span",
    "SpecContext",
    "Tree",
    "condition_of",
    "parse_constraint_args",
]


#: factory(spec, context, weight) -> Constraint: builds a constraint from its option's string.
Factory = Callable[[str, SpecContext, float], Constraint]
#: Constraint kinds the CLI knows, by option name.
FACTORIES: dict[str, Factory] = {
    "length": Length.from_spec,
    "infill": Infill.from_spec,
    "keywords": Keywords.from_spec,
    "pos": POS.from_spec,
    "tree": Tree.from_spec,
    "span": Span.from_spec,
    "attribute": Attribute.from_spec,
    "mentions": Mentions.from_spec,
}


def parse_weights(items: Iterable[str]) -> dict[str, float]:
    """`["keywords=2", "length=0.5"]` -> {"keywords": 2.0, "length": 0.5}."""
    weights: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"bad weight {item!r}: expected NAME=WEIGHT, e.g. keywords=2")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"bad weight {item!r}: {value!r} is not a number") from None
    return weights


def parse_constraint_args(
    specs: Mapping[str, str | None],
    vocab: Vocab,
    max_len: int,
    weights: Iterable[str] = (),
    *,
    run: str | Path | None = None,
) -> list[Constraint]:
    """Build the constraints named on the command line.

    Args:
        specs: option name -> its string, e.g. {"length": "10", "keywords": "Zizzi"};
            None means the option was not given.
        vocab: the run's vocabulary.
        max_len: L of the run.
        weights: `NAME=WEIGHT` strings; constraints without one weigh 1.
        run: the run directory; needed by the classifier constraints (pos, tree, span,
            attribute, mentions), which load its classifiers once each.

    Returns:
        One constraint per given option, in `specs` order.

    Raises:
        ValueError: no constraint, an unknown kind, a malformed value, a weight for
            a constraint that was not given, or a classifier the run does not have.
    """
    given = {name: spec for name, spec in specs.items() if spec is not None}
    unknown = sorted(set(given) - set(FACTORIES))
    if unknown:
        raise ValueError(f"unknown constraint(s) {', '.join(unknown)}; valid: {', '.join(FACTORIES)}")
    if not given:
        raise ValueError(f"no constraint given; use one or more of: {', '.join('--' + name for name in FACTORIES)}")
    weight_of = parse_weights(weights)
    stray = sorted(set(weight_of) - set(given))
    if stray:
        raise ValueError(f"weight given for {', '.join(stray)} but no such constraint is set")
    context = SpecContext(vocab, max_len, None if run is None else Path(run))
    return [FACTORIES[name](spec, context, weight_of.get(name, 1.0)) for name, spec in given.items()]
