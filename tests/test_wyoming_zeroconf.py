"""Issue 17, discovery: `wyoming.advertise` announces `_wyoming._tcp.local.` over real multicast
between two network namespaces this test creates (a veth pair: the edgevoice host and a "Home
Assistant" host), and Home Assistant's side finds it, resolves it and talks Wyoming to it. With
the default (`advertise: false`) nothing is announced."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytest.importorskip("zeroconf", reason="the zeroconf package (pip install zeroconf)")
pytest.importorskip("wyoming", reason="the wyoming package (pip install wyoming)")

from edgevoice.devtools import wyoming_peer as peer  # noqa: E402

SERVER_IP, HA_IP = "10.213.7.1", "10.213.7.2"

# Home Assistant's side: browse for the service type, resolve it, describe it over TCP.
BROWSE = r"""
import asyncio, json, sys
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info

async def main(seconds):
    zc = AsyncZeroconf(interfaces=[sys.argv[2]], ip_version=IPVersion.V4Only)
    found = asyncio.Queue()
    def changed(zeroconf, service_type, name, state_change):
        found.put_nowait(name)
    browser = AsyncServiceBrowser(zc.zeroconf, "_wyoming._tcp.local.", handlers=[changed])
    result = {"found": None}
    try:
        name = await asyncio.wait_for(found.get(), seconds)
        info = AsyncServiceInfo("_wyoming._tcp.local.", name)
        if await info.async_request(zc.zeroconf, 3000):
            host, port = info.parsed_addresses()[0], info.port
            async with AsyncTcpClient(host, port) as client:
                await client.write_event(Describe().event())
                while True:
                    event = await asyncio.wait_for(client.read_event(), 10)
                    if Info.is_type(event.type):
                        break
            result = {"found": name, "host": host, "port": port,
                      "asr": Info.from_event(event).asr[0].name}
    except asyncio.TimeoutError:
        pass
    finally:
        await browser.async_cancel()
        await zc.async_close()
    print(json.dumps(result))

asyncio.run(main(float(sys.argv[1])))
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def two_hosts():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (`ip netns`) to create network namespaces")
    tag = uuid.uuid4().hex[:6]
    srv, ha = f"evwy-{tag}-s", f"evwy-{tag}-h"
    try:
        _ip("netns", "add", srv)
        _ip("netns", "add", ha)
        _ip("link", "add", f"vs{tag}", "type", "veth", "peer", "name", f"vh{tag}")
        for ns, dev, addr in ((srv, f"vs{tag}", SERVER_IP), (ha, f"vh{tag}", HA_IP)):
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up", "multicast", "on")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)
    except subprocess.CalledProcessError as exc:
        for ns in (srv, ha):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pytest.skip(f"cannot create network namespaces here: {exc.stderr.decode().strip()}")
    yield srv, ha
    for ns in (srv, ha):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _browse(ha: str, seconds: float) -> dict:
    out = subprocess.run(["ip", "netns", "exec", ha, sys.executable, "-c", BROWSE, str(seconds),
                          HA_IP], capture_output=True, text=True, timeout=seconds + 30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_advertised_only_when_asked_and_found_from_another_host(two_hosts, tmp_path: Path):
    srv, ha = two_hosts
    cfg = tmp_path / "c.yaml"
    cfg.write_text("llm:\n  max_tokens: 4\nwyoming:\n  name: kitchen-edgevoice\n")
    args = ["-v", "--config", str(cfg), "--uri", f"tcp://{SERVER_IP}:0"]
    prefix = ["ip", "netns", "exec", srv]
    with peer.wyoming_server(args, prefix=prefix):
        assert _browse(ha, 3.0) == {"found": None}  # privacy first: silent by default
    with peer.wyoming_server([*args, "--advertise"], prefix=prefix) as server:
        seen = _browse(ha, 15.0)
        assert server.wait_log("announced kitchen-edgevoice")
    assert seen == {"found": "kitchen-edgevoice._wyoming._tcp.local.", "host": SERVER_IP,
                    "port": server.port, "asr": "edgevoice-asr"}
    assert server.process.returncode == 0, "\n".join(server.log[-10:])


def test_a_loopback_listener_is_not_announced():
    from edgevoice.wyoming.discovery import lan_address

    assert lan_address("127.0.0.1") is None and lan_address("localhost") is None
    assert lan_address("192.168.1.20") == "192.168.1.20"
