import json

import pytest

from mediator.redaction import SECRET_KEYS, redact_headers, redact_json, redact_text

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VybmFtZSI6IkFkbWluIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def test_headers_with_credentials_are_masked():
    headers = redact_headers({"Authorization": f"Bearer {JWT}", "Accept": "application/json"})
    assert headers == {"Authorization": "***", "Accept": "application/json"}


def test_json_secrets_masked_at_any_depth():
    doc = {"username": "Admin", "password": "admin123", "nested": [{"token": JWT, "keep": 1}]}
    assert redact_json(doc) == {
        "username": "Admin",
        "password": "***",
        "nested": [{"token": "***", "keep": 1}],
    }


def test_free_text_tokens_and_passwords_masked():
    text = f'login failed: Authorization: Bearer {JWT} body {{"password": "admin123"}} then {JWT}'
    cleaned = redact_text(text)
    assert JWT not in cleaned
    assert "admin123" not in cleaned
    assert "login failed" in cleaned


def test_a_password_with_quotes_is_masked_whole():
    text = '{"username": "Admin", "password": "Adm\\"in-S3cret tail"}'
    assert "S3cret" not in redact_text(text)


@pytest.mark.parametrize("key", sorted(SECRET_KEYS))
def test_every_secret_field_name_is_masked_in_a_logged_document(key):
    doc = {"properties": {"claim_code": "C1", key.upper(): "s3cr3t-value"}, "upstream": [{"status": 201}]}
    assert "s3cr3t-value" not in json.dumps(redact_json(doc))


def test_tokens_in_values_of_a_document_are_masked():
    doc = {"upstream": [{"name": "login", "error": f"refused {JWT}"}], "note": "Basic dXNlcjpwYXNzd29yZA=="}
    cleaned = json.dumps(redact_json(doc))
    assert JWT not in cleaned and "dXNlcjpwYXNzd29yZA" not in cleaned


def test_a_document_without_secrets_reads_the_same():
    doc = {"claim_code": "C1", "total": 12.5, "lines": [{"display": "Paracétamol 500 mg"}], "none": None}
    assert redact_json(doc) == {
        "claim_code": "C1",
        "total": 12.5,
        "lines": [{"display": "Paracétamol 500 mg"}],
        "none": None,
    }
