"""scripts/testhosts.sh: real network namespaces, a TCP round trip, tbf rate limits, nft loss."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "testhosts.sh"
PREFIX = "gmlt"  # not the default "gml": a demo or integration set may be up at the same time
ENV = {**os.environ, "TESTHOSTS_PREFIX": PREFIX}


def _netns_usable() -> str | None:
    """None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "needs iproute2 (ip, tc)"
    probe = f"{PREFIX}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


pytestmark = pytest.mark.netns
_why_not = _netns_usable()
if _why_not:
    pytestmark = [pytest.mark.netns, pytest.mark.skip(reason=f"testhosts: {_why_not}")]


def th(*args: str, timeout_s: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout_s, check=check)


def leftovers() -> list[str]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return re.findall(rf"\b{PREFIX}-(?:h|v|br)\d+\b", netns + links)


@pytest.fixture
def hosts():
    """Brings hosts down before and after, whatever the test did."""
    th("down")
    yield th
    th("down")
    assert leftovers() == []


SERVER = """
import socket
s = socket.create_server(("10.77.0.3", 7777)); s.settimeout(15)
c, _ = s.accept(); c.settimeout(5)
c.sendall(c.recv(64).upper())
"""
CLIENT = """
import socket, sys, time
deadline = time.monotonic() + 10
while True:
    try:
        c = socket.create_connection(("10.77.0.3", 7777), timeout=2); break
    except OSError:
        if time.monotonic() > deadline: raise
        time.sleep(0.1)
c.sendall(b"ping from h1"); c.settimeout(5); print(c.recv(64).decode())
"""


def test_tcp_round_trip_and_rate_limit_then_nothing_left(hosts):
    out = hosts("up", "3", "--rate", "50mbit").stdout
    assert "host 3: netns gmlt-h3 address 10.77.0.3" in out
    server = subprocess.Popen([str(SCRIPT), "exec", "3", sys.executable, "-c", SERVER], env=ENV)
    try:
        got = hosts("exec", "1", sys.executable, "-c", CLIENT, timeout_s=30)
        assert got.stdout.strip() == "PING FROM H1"
        assert server.wait(timeout=10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    outside = subprocess.run(["tc", "qdisc", "show", "dev", f"{PREFIX}-v2"], capture_output=True,
                             text=True).stdout
    inside = hosts("exec", "2", "tc", "qdisc", "show", "dev", "eth0").stdout
    assert "tbf" in outside and "rate 50Mbit" in outside
    assert "tbf" in inside and "rate 50Mbit" in inside
    root_addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    assert "10.77.0." not in root_addrs, "test-host addresses leaked into the root namespace"
    hosts("down")
    assert leftovers() == []
    hosts("down")  # idempotent


UDP_SINK = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("10.77.0.2", 7778)); s.settimeout(1.5)
n = 0
try:
    while True:
        s.recv(64); n += 1
except socket.timeout:
    print(n)
"""
UDP_SOURCE = """
import socket, time
time.sleep(0.5)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(400):
    s.sendto(b"x", ("10.77.0.2", 7778)); time.sleep(0.001)
"""


def test_loss_rule_drops_about_the_asked_share(hosts):
    hosts("up", "2", "--loss", "50")
    rule = hosts("exec", "2", "nft", "list", "ruleset").stdout
    assert "numgen random mod 100 < 50 drop" in rule
    sink = subprocess.Popen([str(SCRIPT), "exec", "2", sys.executable, "-c", UDP_SINK], env=ENV,
                            stdout=subprocess.PIPE, text=True)
    try:
        hosts("exec", "1", sys.executable, "-c", UDP_SOURCE, timeout_s=30)
        received = int(sink.communicate(timeout=20)[0])
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    assert 100 < received < 300, f"{received} of 400 datagrams arrived with 50% loss"


def test_bad_arguments_are_refused(hosts):
    assert th("up", "0", check=False).returncode == 2
    assert th("up", "2", "--loss", "200", check=False).returncode == 2
    bad = th("up", "2", "--jitter", "5", check=False)
    assert bad.returncode == 2 and "unknown option" in bad.stderr
    assert th("exec", "7", "true", check=False).returncode == 2
    assert leftovers() == []
