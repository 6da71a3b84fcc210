"""What of a request may be written to disk (ipybgfetch._secrets)."""

from __future__ import annotations

import pytest

from ipybgfetch._secrets import (
    REDACTED,
    has_redacted_params,
    has_secret_params,
    redact_url,
    secret_headers,
    stored_headers,
)


def test_only_allowlisted_header_values_are_stored():
    headers = {
        "Accept": "text/csv",
        "User-Agent": "me",
        "X-Api-Key": "k",
        "PRIVATE-TOKEN": "t",
        "Authorization": "Bearer x",
        "X-Custom": "anything",
    }
    assert stored_headers(headers.items()) == {"Accept": "text/csv", "User-Agent": "me"}
    assert secret_headers(["accept", "X-Custom"]) is True
    assert secret_headers(["Accept", "content-type"]) is False


@pytest.mark.parametrize(
    "url,stored",
    [
        ("https://h/a.csv?access_token=s3cr3t&x=1", f"https://h/a.csv?access_token={REDACTED}&x=1"),
        ("https://h/a?X-Amz-Signature=abc&X-Amz-Credential=AK/1", f"https://h/a?X-Amz-Signature={REDACTED}&X-Amz-Credential={REDACTED}"),
        ("https://h/a?x-goog-signature=abc", f"https://h/a?x-goog-signature={REDACTED}"),
        ("https://h/a?sig=1&se=2026&api_key=z&my_token=q", f"https://h/a?sig={REDACTED}&se=2026&api_key={REDACTED}&my_token={REDACTED}"),
        ("https://h/a?page=2&name=key", "https://h/a?page=2&name=key"),
        ("https://h/a.csv", "https://h/a.csv"),
    ],
)  # fmt: skip
def test_secret_query_parameters_are_redacted(url, stored):
    assert redact_url(url) == stored
    assert has_secret_params(url) == (stored != url)
    assert has_redacted_params(stored) == (stored != url)
    assert not has_redacted_params(url)


def test_log_lines_never_carry_a_url_secret(mgr, server, caplog):
    """A URL's token is redacted in every ipybgfetch log line (a user's logging config may
    write them to a file), message and traceback alike."""
    import logging
    import uuid

    secret = "s3cr3t-" + uuid.uuid4().hex
    ok = server.url("ok.bin", 1000, tag=uuid.uuid4().hex) + f"&access_token={secret}"
    bad = server.url("gone.bin", 10, status=404, tag=uuid.uuid4().hex) + f"&sig={secret}"
    with caplog.at_level(logging.DEBUG, logger="ipybgfetch"):
        reg = mgr.fetch("logged-secret", [ok, bad])
        reg.wait(15)
        try:
            raise ValueError(f"failed for {ok}")
        except ValueError:
            logging.getLogger("ipybgfetch").exception("while fetching %s", bad)
    lines = [r for r in caplog.records if r.name == "ipybgfetch"]
    assert any("ok.bin" in r.getMessage() for r in lines), "the download logged nothing"
    assert secret not in caplog.text
    assert "access_token=REDACTED" in caplog.text and "sig=REDACTED" in caplog.text


def test_the_transports_request_log_line_carries_no_url_secret(mgr, server, caplog):
    """Our transport writes httpx's "HTTP Request:" INFO line itself; its URL is redacted."""
    import logging
    import uuid

    secret = "tok-" + uuid.uuid4().hex
    url = server.url("h.bin", 100, tag=uuid.uuid4().hex) + f"&api_key={secret}"
    with caplog.at_level(logging.INFO, logger="httpx"):
        assert mgr.fetch("httpx-line", url).wait(15).result == "success"
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert any("HTTP Request: GET" in m and "h.bin" in m for m in lines), lines
    assert secret not in caplog.text
