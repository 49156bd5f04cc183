"""Provenance: no required bindings beyond the model's own checks."""

BINDINGS: dict[str, tuple[str, ...]] = {}
