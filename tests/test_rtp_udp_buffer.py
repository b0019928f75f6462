"""RTP sockets get the receive buffer a keyframe's burst needs, past net.core.rmem_max when
the process may go past it, and the shortfall is logged when it may not."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.rtp.udp_buffer import granted_receive_buffer, widen_receive_buffer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="net.core.rmem_max is Linux's")

RMEM_MAX = Path("/proc/sys/net/core/rmem_max")


def past_the_cap() -> int:
    """A buffer size the plain SO_RCVBUF cannot give on this machine."""
    return 2 * int(RMEM_MAX.read_text()) + 65536


def test_a_privileged_process_gets_past_rmem_max():
    if os.geteuid() != 0:
        pytest.skip("SO_RCVBUFFORCE needs CAP_NET_ADMIN")
    wanted = past_the_cap()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
        assert granted_receive_buffer(sock) < wanted  # the cap holds for the plain option
        assert widen_receive_buffer(sock, wanted) == granted_receive_buffer(sock) >= wanted


def test_an_unprivileged_process_keeps_the_cap_and_says_what_to_raise():
    """In a process without capabilities (root with its bounding set emptied), the buffer
    stays at the cap and one warning names net.core.rmem_max, however many sockets open."""
    if os.geteuid() != 0:
        pytest.skip("dropping capabilities with setpriv needs root")
    wanted = past_the_cap()
    script = (
        "import logging, socket\n"
        "from ingest.rtp.udp_buffer import widen_receive_buffer\n"
        "logging.basicConfig(level=logging.WARNING, format='%(name)s %(message)s')\n"
        f"for _ in range(3): print(widen_receive_buffer(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), {wanted}))\n"
    )
    done = subprocess.run(
        ["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    granted = [int(line) for line in done.stdout.split()]
    assert len(granted) == 3 and all(g < wanted for g in granted), granted
    warnings = [line for line in done.stderr.splitlines() if line.startswith("mediacore.rtp ")]
    assert len(warnings) == 1 and "net.core.rmem_max" in warnings[0], done.stderr
