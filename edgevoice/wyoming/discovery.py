"""Zeroconf: announce the Wyoming service as `_wyoming._tcp.local.` so Home Assistant finds it.

Off unless `wyoming.advertise: true` (privacy first: nothing announces itself by default).
"""

from __future__ import annotations

import logging
import socket
from typing import Optional

log = logging.getLogger(__name__)

SERVICE_TYPE = "_wyoming._tcp.local."
MDNS_GROUP = "224.0.0.251"


def default_name() -> str:
    return f"edgevoice-{socket.gethostname().split('.')[0]}"


def lan_address(host: str) -> Optional[str]:
    """The IPv4 address to announce: ``host`` itself, or for 0.0.0.0 the address this machine
    sends multicast from (the kernel's route choice; no packet is sent). None for loopback or
    when no interface routes multicast."""
    if host in ("", "0.0.0.0"):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect((MDNS_GROUP, 5353))
            host = probe.getsockname()[0]
        except OSError:
            return None
        finally:
            probe.close()
    try:
        packed = socket.inet_aton(socket.gethostbyname(host))
    except OSError:
        return None
    return None if packed[0] == 127 else socket.inet_ntoa(packed)


class Advertisement:
    """One registered service record; ``aclose`` withdraws it (a goodbye packet)."""

    def __init__(self, name: str, address: str, port: int) -> None:
        self.name, self.address, self.port = name, address, port
        self._zc = None
        self._info = None

    async def start(self) -> None:
        try:
            from zeroconf import IPVersion
            from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
        except ImportError:
            from edgevoice.errors import UserError

            raise UserError("wyoming.advertise needs the zeroconf package: `pip install "
                            "zeroconf`, or set `wyoming.advertise: false`") from None
        from edgevoice import __version__

        self._info = AsyncServiceInfo(
            SERVICE_TYPE, f"{self.name}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(self.address)], port=self.port,
            properties={"version": __version__}, server=f"{self.name}.local.")
        self._zc = AsyncZeroconf(interfaces=[self.address], ip_version=IPVersion.V4Only)
        await self._zc.async_register_service(self._info)
        log.info("announced %s on %s:%d (zeroconf %s)", self.name, self.address, self.port,
                 SERVICE_TYPE)

    async def aclose(self) -> None:
        if self._zc is None:
            return
        zc, self._zc = self._zc, None
        try:
            await zc.async_unregister_service(self._info)
        finally:
            await zc.async_close()


async def advertise(name: Optional[str], host: str, port: int) -> Optional[Advertisement]:
    """Announce the service, or warn why it cannot be (a loopback-only listener)."""
    address = lan_address(host)
    if address is None:
        log.warning("wyoming.advertise is on but the service listens on %s, which Home "
                    "Assistant on another machine cannot reach: set `wyoming.uri` to "
                    "tcp://0.0.0.0:%d (or a LAN address); nothing was announced", host, port)
        return None
    ad = Advertisement(name or default_name(), address, port)
    await ad.start()
    return ad
