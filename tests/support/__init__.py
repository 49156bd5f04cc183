"""Test harness: real server processes and a schema-checking FHIR client."""
