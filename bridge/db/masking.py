"""Masking passwords in URLs and in the messages that quote them.

Every message that names a database passes through here before it is printed or logged, so a
password never reaches a terminal or a log. Only a URL's password field (or a ``password=``
pair, or a quoted token that is exactly the password) is ever masked: the rest of a message
stays as libpq wrote it, because that is what the user needs to see to fix it.
"""

from __future__ import annotations

import re
from contextlib import suppress
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict

_URL_IN_TEXT = re.compile(r"postgres(?:ql)?://[^\s\"'<>]+")
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']+)")
_QUERY_PASSWORD = re.compile(r"((?:^|[?&])password=)[^&#]*")


def redact_url(url: str) -> str:
    """Mask the password field of a URL (and a ``password`` query parameter) or the
    ``password=`` value of a libpq key/value string, leaving everything else as written.

    An empty password (``postgres:@host``) is not a secret and is left alone."""
    if "://" not in url:
        return _KV_PASSWORD.sub(r"\1***", url)
    scheme, _, rest = url.partition("://")
    end = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if found != -1:
            end = min(end, found)
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hosts = authority.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon and password:
            authority = f"{user}:***@{hosts}"
    path, question, query = tail.partition("?")
    if question:
        query, hash_, fragment = query.partition("#")
        masked = _QUERY_PASSWORD.sub(r"\g<1>***", query)
        tail = f"{path}?{masked}{hash_}{fragment}"
    return f"{scheme}://{authority}{tail}"


def scrub(message: str, url: str | None = None) -> str:
    """``message`` with every URL's password field and ``password=`` value masked, and, when
    ``url`` is given, a quoted token that is exactly its password (libpq quotes a malformed
    one: ``invalid percent-encoded token: "s3cr%zz"``). Nothing else is touched: the password
    ``on`` leaves ``Connection refused`` as it is."""
    message = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), message)
    message = _KV_PASSWORD.sub(r"\1***", message)
    for secret in _passwords(url):
        message = message.replace(f'"{secret}"', '"***"')
    return message


def _passwords(url: str | None) -> set[str]:
    """The password of ``url`` as written and decoded, as urllib and as libpq read it."""
    if not url:
        return set()
    found: set[str] = set()
    if "://" in url:
        rest = url.partition("://")[2]
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        for userinfo in (authority.rpartition("@")[0], authority.partition("@")[0]):
            password = userinfo.partition(":")[2]
            found.update({password, unquote(password)})
    with suppress(psycopg.Error):
        found.add(str(conninfo_to_dict(url).get("password") or ""))
    found.discard("")
    return found


def _first_line(message: str) -> str:
    """The first line of ``message``: what every module here quotes, a failure being one line."""
    stripped = message.strip()
    return stripped.splitlines()[0] if stripped else stripped
