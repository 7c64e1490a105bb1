"""A LAN that tests can break: a network namespace behind a veth pair, with ``tc netem`` faults.

    with Lan() as lan:                 # root only: ip netns + veth, torn down at the end
        with llama_server(model, host=lan.peer_ip, prefix=lan.exec_prefix) as srv: ...
        lan.netem("delay 3ms 2ms loss 1%")   # when the kernel has sch_netem
        lan.link(False)                      # the cable pulled mid-stream
        lan.blackhole(True)                  # packets to the server vanish

The host side keeps ``host_ip``; the server's side of the link lives in the namespace at
``peer_ip``. Nothing here touches an interface or route it did not create.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Optional

NETEM_MISSING = "the kernel has no netem qdisc (sch_netem): delay/jitter/loss cannot be emulated"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10,
                          check=check)


def lan_missing() -> Optional[str]:
    """Why a namespace LAN cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "the ip and tc commands are missing (apt install iproute2)"
    return None


class Lan:
    """One namespace, one veth pair, one /30: created on enter, removed on exit."""

    def __init__(self, tag: Optional[str] = None) -> None:
        tag = tag or f"{os.getpid() % 100000}"
        self.ns = f"evlan{tag}"
        self.host_if, self.peer_if = f"evh{tag}"[:15], f"evp{tag}"[:15]
        octet = 4 * (os.getpid() % 60)
        self.host_ip, self.peer_ip = f"10.213.{octet // 4}.1", f"10.213.{octet // 4}.2"
        self._netem = False
        self._blackhole = False

    @property
    def exec_prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.ns)

    def __enter__(self) -> Lan:
        try:
            _ip("netns", "add", self.ns)
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if)
            _ip("link", "set", self.peer_if, "netns", self.ns)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("-n", self.ns, "addr", "add", f"{self.peer_ip}/30", "dev", self.peer_if)
            _ip("-n", self.ns, "link", "set", self.peer_if, "up")
            _ip("-n", self.ns, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as exc:
            self.__exit__()
            raise RuntimeError(f"cannot build the test LAN: {exc.stderr.strip()}") from None
        return self

    def __exit__(self, *_exc: object) -> None:
        self.blackhole(False)
        _ip("link", "del", self.host_if, check=False)  # takes its peer with it
        _ip("netns", "del", self.ns, check=False)

    def netem_available(self) -> bool:
        """Whether ``netem`` works on this kernel (tried on the host side of the link)."""
        done = subprocess.run(["tc", "qdisc", "add", "dev", self.host_if, "root", "netem",
                               "delay", "1ms"], capture_output=True, text=True, timeout=10)
        if done.returncode:
            return False
        self.netem("")
        return True

    def netem(self, spec: str) -> None:
        """Apply ``tc netem`` ``spec`` to both directions of the link ("" removes it)."""
        for prefix in ((), ("ip", "netns", "exec", self.ns)):
            dev = self.host_if if not prefix else self.peer_if
            if spec:
                command = [*prefix, "tc", "qdisc", "replace", "dev", dev, "root", "netem",
                           *spec.split()]
            else:
                command = [*prefix, "tc", "qdisc", "del", "dev", dev, "root"]
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
            if done.returncode and spec:
                raise RuntimeError(f"tc netem {spec}: {done.stderr.strip()}")

    def link(self, up: bool) -> None:
        """The host side of the cable in or out."""
        _ip("link", "set", self.host_if, "up" if up else "down")
        if up:  # the address's route comes back with the link
            _ip("addr", "replace", f"{self.host_ip}/30", "dev", self.host_if)

    def blackhole(self, on: bool) -> None:
        """A blackhole route to the server: whatever is sent to it silently disappears."""
        if on and not self._blackhole:
            _ip("route", "add", "blackhole", f"{self.peer_ip}/32")
        elif not on and self._blackhole:
            _ip("route", "del", "blackhole", f"{self.peer_ip}/32", check=False)
        self._blackhole = on
