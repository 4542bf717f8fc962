"""Database URLs in messages: never with their password."""

from __future__ import annotations


def hide_password(url: str | object) -> str:
    """A database URL as text, its password (if any) shown as ``***``.

    Works on the raw text, not on a parsed URL: a URL SQLAlchemy cannot parse, or a password
    holding an unescaped ``@`` (which a parser would cut in two), must not leak either. The
    user info runs to the *last* ``@``, so the mask may cover more than the password, never less.
    """
    is_parsed = hasattr(url, "render_as_string")  # a sqlalchemy.URL
    text = url.render_as_string(hide_password=False) if is_parsed else str(url)  # type: ignore
    scheme, sep, rest = text.partition("://")
    at = rest.rfind("@")
    if not sep or at < 0 or ":" not in rest[:at]:
        return text
    user = rest[:at].split(":", 1)[0]
    return f"{scheme}://{user}:***{rest[at:]}"
