from mediator.openimis.quirks import means_not_found, public_link, rewrite_bundle

PUBLIC = "https://hie.example.org/openimis/fhir"
ALLOWED = ("_count", "page-offset", "identifier", "_lastUpdated")


def test_encoded_upstream_link_becomes_a_public_link():
    upstream = "http://imis.internal:8000/api/api_fhir_r4/Medication/?_count%3D2%26page-offset%3D3"
    assert public_link(upstream, PUBLIC, ALLOWED) == f"{PUBLIC}/Medication?_count=2&page-offset=3"


def test_link_drops_parameters_the_mediator_does_not_offer():
    upstream = "http://imis/api/api_fhir_r4/ActivityDefinition/?_count%3D2%26secret%3Dx"
    assert public_link(upstream, PUBLIC, ALLOWED) == f"{PUBLIC}/ActivityDefinition?_count=2"


def test_bundle_links_and_full_urls_never_show_the_upstream_host():
    bundle = {
        "resourceType": "Bundle",
        "link": [
            {"relation": "next", "url": "http://imis.internal/api/api_fhir_r4/Medication/?page-offset%3D2"}
        ],
        "entry": [
            {
                "fullUrl": "http://imis.internal/api/api_fhir_r4/Medication/abc",
                "resource": {"resourceType": "Medication", "id": "abc"},
            }
        ],
    }
    rewritten = rewrite_bundle(bundle, PUBLIC, ALLOWED)
    assert "imis.internal" not in str(rewritten)
    assert rewritten["entry"][0]["fullUrl"] == f"{PUBLIC}/Medication/abc"


def test_not_found_is_recognised_in_openimis_500s():
    assert means_not_found(404, [])
    assert means_not_found(500, ["Medication matching query does not exist."])
    assert not means_not_found(500, ["Internal server error"])
    assert not means_not_found(502, ["does not exist"])
