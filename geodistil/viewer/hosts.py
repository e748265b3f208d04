"""Which ``Host`` headers the viewer answers: its defence against DNS rebinding.

A web page open in the user's browser can point a name of its own at 127.0.0.1 and then
read the viewer's pages and API as if they were its own origin; the only trace of that is
the ``Host`` header, which carries the page's name. So the viewer answers only the names it
was started for: the loopback names, the address it listens on (unless that is every
interface), and the names the user lists (``geodistil view --allowed-host NAME``).

The port is not checked: an SSH tunnel or a proxy may reach the viewer on another port,
and the name alone is what a rebinding page cannot fake.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

LOOPBACK = ("localhost", "127.0.0.1", "[::1]")
EVERY_INTERFACE = {"0.0.0.0", "::", "[::]", ""}  # listening here names no host a browser would use
_DNS_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*")


def host_name(text: str) -> str:
    """A host name or IP address as a ``Host`` header spells it: lower case, IPv6 in brackets.

    Raises ``ValueError`` (one line) for anything else, such as a URL or a name with a port.
    """
    name = text.strip().lower()
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        if bare != name or not _DNS_NAME.fullmatch(name):
            raise ValueError(f"{text!r} is not a host name or IP address "
                             "(give it without scheme, port or path)") from None
        return name
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


def host_names(bound: str, extra: Iterable[str] = ()) -> list[str]:
    """The names the viewer answers: the address it listens on first, the loopback names, then ``extra``."""
    names: list[str] = []
    listening = [] if bound.strip() in EVERY_INTERFACE else [bound]
    for name in map(host_name, [*listening, *LOOPBACK, *extra]):
        if name not in names:
            names.append(name)
    return names
