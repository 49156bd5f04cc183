"""The FHIR RESTful API: routing, negotiation, Bundles, paging, OperationOutcome, headers."""
