"""The thin Flask layer: routes, content negotiation, errors as FHIR, the OpenHIM envelope."""
