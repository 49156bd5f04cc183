"""Patient: required gender and link-type bindings."""

BINDINGS = {
    "gender": ("male", "female", "other", "unknown"),
    "link.type": ("replaced-by", "replaces", "refer", "seealso"),
}
