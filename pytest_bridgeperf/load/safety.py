"""Where a load run may send traffic: loopback and the in-process app, unless allowed explicitly."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["LoadTargetError", "Target", "check_allowed", "parse_url"]


class LoadTargetError(ValueError):
    """The target is invalid or not allowed; raised before any request is sent."""


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    path: str  # path and query, at least "/"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host_header}"


def parse_url(url: str) -> Target:
    if not isinstance(url, str):
        raise LoadTargetError(f"target {url!r} is not a URL")
    try:
        parts = urlsplit(url.strip())
        port_raw = parts.port
    except ValueError as exc:
        raise LoadTargetError(f"target {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise LoadTargetError(
            f"target {url!r}: only http:// and https:// URLs can be load-tested "
            "(or pass an aiohttp.web.Application or a callable)"
        )
    if not parts.hostname:
        raise LoadTargetError(f"target {url!r} has no host")
    if parts.username or parts.password:
        raise LoadTargetError(
            f"target {url!r}: credentials in the URL are not supported; use headers="
        )
    port = port_raw if port_raw is not None else (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url=url, scheme=parts.scheme, host=parts.hostname, port=port, path=path)


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_allowed(target: Target, allowed_hosts: Iterable[str]) -> None:
    """Raise :class:`LoadTargetError` unless the target is loopback or explicitly allowed."""
    if is_loopback(target.host):
        return
    host = target.host.lower()
    for entry in allowed_hosts:
        entry = entry.strip().lower()
        if entry in (host, f"{host}:{target.port}", target.address.lower()):
            return
    raise LoadTargetError(
        f"refusing to load-test {target.address} ({target.url}): only loopback addresses and an "
        "in-process app are targets by default. If you own that host and mean it, list it in "
        f"the ini option perf_allowed_hosts (e.g. 'perf_allowed_hosts = {target.host}')."
    )
