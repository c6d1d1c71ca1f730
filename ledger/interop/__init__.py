"""Mappings between the ledger's events and the field's standards (GS1 EPCIS 2.0 / CBV 2.0): pure functions,
both directions, no I/O."""
