"""Sink URLs made safe to show: ``redact_url``, for logs, errors and ``--help``."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus, urlsplit, urlunsplit

# Query parameters that carry secrets: redis-py takes any connection argument
# from the query, so ``?password=`` (and ``?ssl_password=``) work like the
# password in the authority; libpq and asyncpg take ``password`` and
# ``sslpassword``.
_SECRET_PARAMETER = re.compile(r"pass|secret|token", re.IGNORECASE)


def _redact_query(query: str) -> str:
    # Segment by segment, so that everything else stays byte for byte.
    segments = []
    for segment in query.split("&"):
        name, sep, _value = segment.partition("=")
        if sep and _SECRET_PARAMETER.search(unquote_plus(name)):
            segment = f"{name}=***"
        segments.append(segment)
    return "&".join(segments)


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``, safe to log.

    Args:
        url: Any URL, such as ``redis://:secret@host:6379/0``,
            ``postgresql://user:secret@host:5432/db`` or
            ``redis://host:6379/0?password=secret``.

    Returns:
        The same URL without the password (in the authority or in a query
        parameter such as ``password``, ``ssl_password`` or ``sslpassword``).
        A password holding an unencoded ``/``, ``?`` or ``#`` ends the
        authority early, so everything up to the last ``@`` is hidden then;
        unparsable input comes back as ``"<unparsable url>"`` rather than
        risking a leak.
    """
    try:
        parts = urlsplit(url)
        scheme, slashes, rest = url.partition("//")
        if slashes and "@" not in parts.netloc and "@" in rest:
            # The '@' that ends the user info lies past where the authority
            # seemed to end: the password has a delimiter in it.
            return redact_url(f"{scheme}//***@{rest.rpartition('@')[2]}")
        query = _redact_query(parts.query)
        if parts.password is None:
            if query == parts.query:
                return url
            # Only the query changes; urlunsplit would drop an empty authority.
            return url.replace(f"?{parts.query}", f"?{query}", 1)
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}", query=query))
    except ValueError:
        return "<unparsable url>"
