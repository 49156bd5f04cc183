"""fhir-sched: an HL7 FHIR R4 scheduling server."""

__version__ = "0.1.0"
