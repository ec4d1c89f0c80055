"""Everything openIMIS: the HTTP client, its JWT login, and the quirks of its FHIR API."""
