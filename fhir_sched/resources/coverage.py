"""Coverage: required status binding (fm-status)."""

BINDINGS = {"status": ("active", "cancelled", "draft", "entered-in-error")}
