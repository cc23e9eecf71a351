"""Which hosts a driftlab server answers to, and which pages may make it write.

A server bound to 127.0.0.1 is still reachable from the operator's browser, and so from any
page the operator opens: that page can post a form to it (a cross-site request) or rebind its
own domain name to 127.0.0.1 and read the answers (DNS rebinding). The API and the dashboard
both refuse requests whose `Host` is not one of theirs, and writes whose `Origin` is another
site's page.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

READS = frozenset({"GET", "HEAD", "OPTIONS"})
"""The methods that never write: every other one needs a same-origin page (and the key)."""

LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
"""Names every server answers to: its own machine's."""

WILDCARDS = frozenset({"0.0.0.0", "::", ""})
"""Bind addresses that are no host name: a server bound to one answers to `LOCAL_NAMES` and
`DRIFTLAB_ALLOWED_HOSTS` only."""


def hostname(netloc: str) -> str | None:
    """The host of `host[:port]` (an IPv6 address in brackets), lowercased; None if there
    is none."""
    try:
        return urlsplit(f"//{netloc}").hostname
    except ValueError:  # a bad port or bracket
        return None


@dataclass(frozen=True)
class SameOrigin:
    """The hosts a server answers to and the origins whose pages may write to it.

    Attributes:
        hosts: Allowed host names, lowercased; "*" among them allows any.
        origins: Origins (`scheme://host[:port]`) besides the server's own.
    """

    hosts: frozenset[str]
    origins: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls, bound: str, allowed_hosts: Iterable[str], allowed_origins: Iterable[str] = ()
    ) -> SameOrigin:
        """For a server bound to `bound`: local names, the bound address, the allowed hosts."""
        own = set() if bound in WILDCARDS else {bound.strip("[]").lower()}
        return cls(
            hosts=frozenset(LOCAL_NAMES | own | {h.strip().lower() for h in allowed_hosts}),
            origins=frozenset(o.strip().rstrip("/").lower() for o in allowed_origins),
        )

    def host_allowed(self, host: str) -> bool:
        """Whether a request's `Host` header names this server."""
        if "*" in self.hosts:
            return True
        name = hostname(host)
        return name is not None and name in self.hosts

    def origin_allowed(self, origin: str, host: str) -> bool:
        """Whether a page at `origin` may write to this server, reached as `host`: a page of
        the server itself (same host and port), or one of `origins`."""
        origin = origin.strip().rstrip("/").lower()
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in {"http", "https"} and parts.netloc == host.strip().lower()
