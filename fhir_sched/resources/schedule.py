"""Schedule: no required bindings of its own; availability templates are checked by scheduling."""

BINDINGS: dict[str, tuple[str, ...]] = {}
