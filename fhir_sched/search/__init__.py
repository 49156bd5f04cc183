"""FHIR search: declarations, index extraction on write, and query parsing into a neutral form."""
