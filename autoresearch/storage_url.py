"""A storage URL as the campaign shows and compares it: never with its password.

The config check refuses a password in `storage` (config.yaml would keep it), but a campaign's
saved config.yaml may hold one still (written by a version that took one in the URL's query, or
edited by hand): what is said of it masks the password, and a command that leaves the password
out, as it now must, names the same database.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

PASSWORD_PARAMS = {"password", "passwd", "pwd", "sslpassword"}  # drivers' query names for one


def masked(url: str) -> str:
    """`url` with a password in it masked, after the user name (from the first : past the scheme's
    slashes to the last @) or in the query (its name percent-decoded, as the driver reads it);
    textual, so it holds for a URL that does not parse too."""
    scheme = re.match(r"[\w+.-]*:?/+", url)
    start = scheme.end() if scheme else 0
    url = url[:start] + re.sub(r":.*@", ":***@", url[start:], count=1, flags=re.S)
    return re.sub(r"(?<=[?&])([^=&]*)=[^&]*", _masked_param, url)


def _masked_param(param: re.Match[str]) -> str:
    name = param[1]
    return f"{name}=***" if _password_param(name) else param[0]


def _password_param(name: str) -> bool:
    return unquote_plus(name).strip().lower() in PASSWORD_PARAMS


def holds_password(parsed: URL) -> bool:
    """Whether a parsed database URL carries a password, after the user name or in its query."""
    return bool(parsed.password) or any(_password_param(k) for k in parsed.query)


def without_password(url: str | None) -> str | None:
    """The database `url` names, its password (in the URL or its query) left out; a URL that does
    not parse, as it is."""
    if not url:
        return url
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return url
    parsed = parsed._replace(password=None)  # (`set` takes None for "keep it")
    parsed = parsed.difference_update_query([k for k in parsed.query if _password_param(k)])
    return parsed.render_as_string(hide_password=False)
