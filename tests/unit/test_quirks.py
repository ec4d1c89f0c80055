import json

from mediator.openimis.quirks import bundle_urls, means_not_found, public_link, rewrite_bundle, rewritten_text

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


# --- openIMIS's own page text, links rewritten without re-encoding -----------------------------

UPSTREAM = "http://imis.internal/api/api_fhir_r4/"


def openimis_page(ids=("a1", "b2", "c3"), **extra_resource_fields):
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 30,
        "link": [
            {"relation": "self", "url": f"{UPSTREAM}Medication/?_count%3D3"},
            {"relation": "next", "url": f"{UPSTREAM}Medication/?_count%3D3%26page-offset%3D2"},
        ],
        "entry": [
            {
                "fullUrl": f"{UPSTREAM}Medication/{i}",
                "resource": {"resourceType": "Medication", "id": i, "code": {"text": "Paracétamol"}}
                | extra_resource_fields,
            }
            for i in ids
        ],
    }


def rewrite_as_text(page, text=None):
    text = text if text is not None else json.dumps(page, ensure_ascii=False)  # as openIMIS writes it
    upstream_urls = bundle_urls(page)
    rewritten = rewrite_bundle(page, PUBLIC, ALLOWED)
    return rewritten, rewritten_text(text, upstream_urls, rewritten, PUBLIC)


def test_the_page_text_gets_the_same_links_as_the_encoded_bundle():
    rewritten, text = rewrite_as_text(openimis_page())
    assert text is not None
    assert json.loads(text) == rewritten
    assert "imis.internal" not in text
    assert f'"{PUBLIC}/Medication/b2"' in text and "Paracétamol" in text


def test_the_text_is_left_to_the_encoder_when_a_url_cannot_be_placed_for_sure():
    # another string starting with openIMIS's base: swapping the prefix would touch it too
    assert rewrite_as_text(openimis_page(extra={"url": f"{UPSTREAM}Organization/x"}))[1] is None
    # an entry without id loses its fullUrl
    page = openimis_page()
    del page["entry"][1]["resource"]["id"]
    assert rewrite_as_text(page)[1] is None
    # JSON text that escapes its slashes
    page = openimis_page()
    assert rewrite_as_text(page, json.dumps(page).replace("/", "\\/"))[1] is None
    # the same link twice
    page = openimis_page()
    page["link"][1]["url"] = page["link"][0]["url"]
    assert rewrite_as_text(page)[1] is None
