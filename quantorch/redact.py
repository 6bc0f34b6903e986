"""Masking secrets in text before it leaves the process or is stored.

Every message that can reach stderr, the database (``tool_calls.summary``/``error``) or a
report goes through :func:`redact` at the edge where it is built. Three things are masked,
each replaced by ``***``:

- credentials in URLs: the ``user:password@`` of any ``scheme://`` URL, and query
  parameters whose names look secret (``key``, ``api_key``, ``token``, ``sig``, ...);
- credentials by their shape: ``Authorization: ...`` and ``X-Api-Key: ...`` header values,
  ``Bearer xxx`` tokens, ``Basic xxx`` tokens (base64 of ``user:password``), ``sk-...``
  keys (OpenAI style), ``hf_...`` and GitHub tokens, ``api_key=...``/``"password": "..."``
  pairs;
- every exact secret value known: those passed in, those registered with
  :func:`register_secret`, the values of the secret environment variables
  (:data:`SECRET_ENV_VARS`) and the passwords in the URLs of :data:`SECRET_URL_ENV_VARS`.
  Values shorter than :data:`MIN_SECRET_LENGTH` characters are not masked as raw substrings
  (too many false hits); the shapes above still mask them.

The functions are pure apart from the registry (a process-wide set guarded by a lock) and
the environment, which :func:`known_secrets` reads at each call. A secret made of ``*``
characters cannot be told apart from the mask and is not guaranteed to disappear.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import threading
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "SECRET_ENV_VARS",
    "SECRET_URL_ENV_VARS",
    "known_secrets",
    "redact",
    "redact_url",
    "register_secret",
    "url_credential_secrets",
]

MASK = "***"
#: Shorter values are masked only by the patterns (Bearer, userinfo, ...), not as substrings.
MIN_SECRET_LENGTH = 6

#: Environment variables whose values are secrets wherever they appear.
SECRET_ENV_VARS: tuple[str, ...] = (
    "QUANTORCH_LLM_API_KEY",
    "ALPACA_API_KEY_ID",
    "APCA_API_KEY_ID",
    "ALPACA_API_SECRET_KEY",
    "APCA_API_SECRET_KEY",
    "OPENAI_API_KEY",
    "HF_TOKEN",
)
#: Environment variables holding URLs whose ``user:password@`` part is a secret.
SECRET_URL_ENV_VARS: tuple[str, ...] = (
    "QUANTORCH_LLM_BASE_URL",
    "QUANTORCH_SEC_BASE_URL",
    "QUANTORCH_SEC_TICKERS_URL",
)

_SECRET_PARAMS = frozenset(
    {
        "key", "api_key", "apikey", "token", "access_token", "secret", "password", "passwd",
        "pwd", "sig", "signature", "auth", "crumb",
    }
)  # fmt: skip
_SECRET_PARAM_SUFFIXES = ("_key", "_token", "_secret", "_password", "_signature")

_REGISTERED: set[str] = set()
_LOCK = threading.Lock()

# scheme://userinfo@ : userinfo runs to the last '@' before the host's end (a password with
# an unencoded '@' is still caught)
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)([^\s/?#'\"<>]+)@")
_QUERY_PARAM = re.compile(r"([?&;])([^=&;#\s?'\"<>]+)=([^&;#\s'\"<>]*)")
_HEADER = re.compile(
    r"(?i)\b(proxy-authorization|authorization|x-api-key|api-key|apca-api-key-id|"
    r"apca-api-secret-key)([\"']?\s*[:=]\s*[\"']?)"
    r"(?:(bearer|basic|token|digest)\s+)?([^\s\"',;}\]]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)([A-Za-z0-9\-._~+/]+=*)")
_BASIC = re.compile(r"(?i)\b(basic)(\s+)([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])")
_KEY_SHAPES = re.compile(
    r"(?<![A-Za-z0-9_\-])(sk-)[A-Za-z0-9_\-*]{8,}"
    r"|(?<![A-Za-z0-9_])(hf_)[A-Za-z0-9]{20,}"
    r"|(?<![A-Za-z0-9_])(gh[pousr]_|github_pat_)[A-Za-z0-9_]{20,}"
)
_PAIR = re.compile(
    r"(?i)\b(api[_-]?key|access[_-]?token|auth[_-]?token|refresh[_-]?token|client[_-]?secret|"
    r"secret[_-]?key|password|passwd)([\"']?\s*[:=]\s*[\"']?)([^\s\"'&,;}\]]+)"
)


def register_secret(value: str | None) -> None:
    """Mask ``value`` in every later :func:`redact` (code that reads a key from a configured
    environment variable calls this). None, empty and short values are ignored."""
    if not value:
        return
    with _LOCK:
        for variant in (value, value.strip()):
            if len(variant) >= MIN_SECRET_LENGTH:
                _REGISTERED.add(variant)


def known_secrets() -> tuple[str, ...]:
    """The registered secrets, the secret environment variables' values and the passwords in
    the URL variables' values, as they are now (at least :data:`MIN_SECRET_LENGTH` long)."""
    with _LOCK:
        found = set(_REGISTERED)
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name, "")
        found.update({value, value.strip()})
    for name in SECRET_URL_ENV_VARS:
        found.update(url_credential_secrets(os.environ.get(name, "")))
    return tuple(sorted(s for s in found if len(s) >= MIN_SECRET_LENGTH))


def url_credential_secrets(url: str) -> set[str]:
    """The secret forms of a URL's ``user:password@`` part: the password as written and
    decoded, and the base64 ``user:password`` that basic auth sends."""
    match = _USERINFO.search(url or "")
    if match is None:
        return set()
    userinfo = match.group(2)
    user, has_password, password = userinfo.partition(":")
    found = {password, unquote(password)} if has_password else {userinfo, unquote(userinfo)}
    plain = f"{unquote(user)}:{unquote(password)}".encode()
    found.add(base64.b64encode(plain).decode("ascii"))
    return {s for s in found if s}


def redact_url(url: str) -> str:
    """``url`` with its ``user:password@`` replaced by ``***@`` and the values of secret-looking
    query parameters (``key``, ``api_key``, ``token``, ``sig``, ...) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not parseable (a bad IPv6 host, say): mask by shape
        return _redact_shapes(url)
    text = url
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        text = text.replace(userinfo + "@", MASK + "@", 1)
    return _QUERY_PARAM.sub(_mask_param, text)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every credential masked (see the module docs).

    Parameters
    ----------
    text
        Free text: an error message, a summary, an HTTP body.
    secrets
        Extra exact values to mask, besides :func:`known_secrets`.

    A planted secret (at least :data:`MIN_SECRET_LENGTH` characters, not containing ``*``)
    never survives, and ``redact(redact(t)) == redact(t)``.
    """
    if not text:
        return text
    values = set(known_secrets())
    for value in secrets:
        if value:
            values.update(v for v in (value, value.strip()) if len(v) >= MIN_SECRET_LENGTH)
    ordered = sorted(values, key=len, reverse=True)  # a longer secret before its substrings
    for _ in range(4):  # to a fixed point: masking one thing can expose another's shape
        masked = _mask_values(_redact_shapes(text), ordered)
        if masked == text:
            break
        text = masked
    return text


def _redact_shapes(text: str) -> str:
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    text = _QUERY_PARAM.sub(_mask_param, text)
    text = _HEADER.sub(_mask_header, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _BASIC.sub(_mask_basic, text)
    text = _KEY_SHAPES.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + MASK, text)
    return _PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


def _mask_values(text: str, ordered: list[str]) -> str:
    for value in ordered:
        if value in text:
            text = text.replace(value, MASK)
    return text


def _secret_param(name: str) -> bool:
    name = unquote(name).strip().lower().replace("-", "_")
    return name in _SECRET_PARAMS or name.endswith(_SECRET_PARAM_SUFFIXES)


def _mask_param(match: re.Match[str]) -> str:
    sep, name, value = match.groups()
    if not value or not _secret_param(name):
        return match.group(0)
    return f"{sep}{name}={MASK}"


def _mask_header(match: re.Match[str]) -> str:
    name, sep, scheme, _ = match.groups()
    return f"{name}{sep}{scheme + ' ' if scheme else ''}{MASK}"


def _mask_basic(match: re.Match[str]) -> str:
    # "Basic" is also an English word: mask only what decodes to basic-auth "user:password"
    token = match.group(3)
    try:
        decoded = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return match.group(0)
    if b":" not in decoded:
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{MASK}"
