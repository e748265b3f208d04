"""URLs without their credentials, for everything that is recorded or logged.

A base URL may carry a secret as ``user:password@`` or as a query parameter (``?key=...``,
``api_key=...``); traces, logs, manifests and Prefect's database keep only what
``redact_url`` leaves. Keys belong in ``OPENAI_API_KEY`` or a Prefect Secret block.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

# names whose values are secrets, for headers, body fields and query parameters alike
# (Authorization, *key*, *token*, X-Amz-Signature, ...; not ``max_tokens``, a count)
_SECRET_NAME = re.compile(r"authorization|key|token(?!s)|secret|password|cookie|credential|signature|^sig$|^auth$",
                          re.IGNORECASE)


def looks_secret(name: str) -> bool:
    """A header, body field or query parameter whose value must never be shown."""
    return bool(_SECRET_NAME.search(name))


def url_has_credentials(url: str) -> bool:
    return redact_url(url) != url


def redact_url(url: str) -> str:
    """``url`` without user info and without query parameters that carry a secret."""
    parts = urlsplit(url)
    if not parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if not looks_secret(k)]
    query = parts.query if len(kept) == len(pairs) else urlencode(kept)
    return urlunsplit((parts.scheme, host, parts.path, query, parts.fragment))


def split_credentials(url: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """``url`` as the client should use it: the URL without credentials, the secret query
    parameters to send with every request, and the headers that carry its user info (HTTP Basic,
    as curl and every browser read ``user:password@``). The openai client would otherwise glue
    the request path after the query and send the user info nowhere."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    secret = {k: v for k, v in pairs if looks_secret(k)}
    headers: dict[str, str] = {}
    if parts.username is not None or parts.password is not None:
        import base64

        token = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
    return redact_url(url), secret, headers
