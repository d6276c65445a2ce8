"""Transfers and disputes as interagency workflows: store, event-log consumer,
clock scanner and FHIR Task (the rules are in hub/domain/workflows)."""
