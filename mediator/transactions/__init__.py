"""The FHIR transactions between facilities and openIMIS, one module per OpenHIE transaction."""
