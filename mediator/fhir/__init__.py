"""FHIR R4 building blocks shared by every transaction: outcomes, media types, capability."""
