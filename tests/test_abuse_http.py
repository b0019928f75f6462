"""Viewers cannot be spoofed: X-Forwarded-For is believed only from configured proxies, and
what is kept of it is bounded. The spoofing client runs beside a healthy ffmpeg stream."""

from __future__ import annotations

import aiohttp
import pytest
from hostile import HealthyStream

from mediacore.origin.http import MAX_ADDRESS, client_address


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    assert client_address("203.0.113.9", "198.51.100.1", []) == "203.0.113.9"
    assert client_address("203.0.113.9", "198.51.100.1", ["10.0.0.1"]) == "203.0.113.9"
    assert client_address("10.0.0.1", "198.51.100.1", ["10.0.0.1"]) == "198.51.100.1"
    # A client's own X-Forwarded-For is left of what the proxies appended: the nearest
    # untrusted hop counts, so a forged first hop does not.
    assert client_address("10.0.0.1", "6.6.6.6, 198.51.100.1, 10.0.0.2", ["10.0.0.1", "10.0.0.2"]) == "198.51.100.1"
    assert len(client_address("10.0.0.1", "x" * 10_000, ["10.0.0.1"])) == MAX_ADDRESS


@pytest.mark.slow
async def test_spoofed_forwarded_for_does_not_make_viewers(engine, healthy_clip) -> None:
    async with HealthyStream(engine, healthy_clip) as healthy:
        url = f"http://127.0.0.1:{engine.http_port}/live/{healthy.name}/index.m3u8"
        async with aiohttp.ClientSession(headers={"User-Agent": "spoofer"}) as session:
            for i in range(300):
                async with session.get(url, headers={"X-Forwarded-For": f"198.51.{i // 256}.{i % 256}"}) as r:
                    assert r.status == 200
            assert engine.viewers.count(healthy.name, engine.clock()) == 2  # the poller and the spoofer
            engine.config.http.trusted_proxies.append("127.0.0.1")  # behind a proxy on loopback: believed
            for i in range(5):
                async with session.get(url, headers={"X-Forwarded-For": f"192.0.2.{i}"}) as r:
                    assert r.status == 200
            assert engine.viewers.count(healthy.name, engine.clock()) == 2 + 5
        await healthy.check()
