"""Origin HTTP contract: URLs, content types, caching, CORS, API, metrics, health, config."""

from __future__ import annotations

import gzip
import logging
import time

import aiohttp
import pytest

from mediacore.app.config import ConfigError, load_config
from mediacore.hub.publisher import PublishAttempt
from mediacore.model.media import Kind, Track


@pytest.fixture
async def live(engine):
    pub = engine.hub.publish("shop1")
    pub.update_track(Track(Kind.VIDEO, "h264", 90000, b"", "avc1.64001f", 1280, 720))
    pub.update_track(Track(Kind.AUDIO, "aac", 48000, b"", "mp4a.40.2", sample_rate=48000, channels=2))
    store = engine.stores["shop1"]
    store.target_duration = 2
    for i in range(3):
        store.add_segment(2.0, b"\x47" + bytes(187), time.time() + 2 * i, False, time.monotonic())
    async with aiohttp.ClientSession(f"http://127.0.0.1:{engine.http_port}") as session:
        yield session, store


async def test_playlist_headers_and_gzip(live):
    session, store = live
    async with session.get("/live/shop1/index.m3u8", headers={"Accept-Encoding": "gzip"}, auto_decompress=False) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
        assert r.headers["Cache-Control"] == "public, max-age=1"  # TD/2 (B.1 table)
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert r.headers.get("Content-Encoding") == "gzip"
        body = gzip.decompress(await r.read()).decode()
    assert body == store.playlist_text()


async def test_segment_headers(live):
    session, store = live
    uri = store.segments[0].uri
    async with session.get(f"/live/shop1/{uri}") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "video/mp2t"
        assert "max-age=3600" in r.headers["Cache-Control"] and "Expires" in r.headers
        assert (await r.read())[:1] == b"\x47"
    async with session.get("/live/shop1/deadbeef-99.ts") as r:
        assert r.status == 404
    async with session.get("/live/nosuch/index.m3u8") as r:
        assert r.status == 404
    async with session.get("/live/..%2Fetc/index.m3u8") as r:
        assert r.status == 404


async def test_cors_preflight(live):
    session, _ = live
    async with session.options(
        "/live/shop1/index.m3u8", headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "GET"}
    ) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "*"


async def test_api_streams_metrics_health_watch(engine, live):
    session, _ = live
    async with session.get("/live/shop1/index.m3u8") as r:
        assert r.status == 200
    async with session.get("/api/streams") as r:
        (info,) = await r.json()
    assert info["name"] == "shop1" and info["state"] == "live"
    assert info["codecs"] == "avc1.64001f,mp4a.40.2" and info["resolution"] == "1280x720"
    assert info["viewers"] == 1 and info["uptime_s"] >= 0
    assert info["urls"]["hls"].endswith("/live/shop1/index.m3u8")
    async with session.get("/metrics") as r:
        assert r.status == 404, "/metrics is not public unless [http] public_metrics says so"
    async with aiohttp.ClientSession() as admin, admin.get(f"http://127.0.0.1:{engine.admin_port}/metrics") as r:
        text = await r.text()
    assert 'mediacore_streams{state="live"} 1.0' in text
    assert 'mediacore_viewers{stream="shop1"} 1.0' in text
    assert "mediacore_http_requests_total" in text
    async with session.get("/healthz") as r:
        assert (await r.json()) == {"status": "ok", "live_streams": 1, "failed_streams": []}
    async with session.get("/watch/shop1") as r:
        page = await r.text()
    assert "/static/hls.min.js" in page and "/static/watch.js" in page
    async with session.get("/static/hls.min.js") as r:
        assert r.status == 200
    async with session.get("/static/watch.js") as r:
        script = await r.text()
    assert "index.m3u8" in script and "ll.m3u8" in script


async def test_publish_keys(engine):
    def attempt(name: str, key: str) -> PublishAttempt:
        return PublishAttempt(name, key, "rtmp", "127.0.0.1")

    engine.config.auth.publish_keys = {"vip": "s3cret"}
    assert await engine.authorize_publish(attempt("vip", "s3cret")) is None
    assert await engine.authorize_publish(attempt("vip", "")) == "publish key is missing or wrong"
    assert await engine.authorize_publish(attempt("open", "")) is None
    engine.config.auth.default_publish_key = "k"
    assert await engine.authorize_publish(attempt("open", "")) == "publish key is missing or wrong"


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[server]\nhttp_port = 9000\n[hls]\nsegment_duration = 4\n[auth]\npublish_keys = { a = "b" }\n')
    cfg = load_config(path, {"server": {"http_port": 9100}})
    assert cfg.server.http_port == 9100 and cfg.hls.segment_duration == 4.0 and cfg.auth.publish_keys == {"a": "b"}
    path.write_text("[server]\nhttp_prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting server.http_prot"):
        load_config(path)
    path.write_text('[rtmp]\nmax_chunk_size = "big"\n')
    with pytest.raises(ConfigError, match="rtmp.max_chunk_size must be int"):
        load_config(path)
    with pytest.raises(ConfigError, match="at least 6"):
        load_config(None, {"hls": {"window_segments": 3}})


def test_a_retired_setting_loads_with_a_warning(tmp_path, caplog):
    """A file written for an earlier release still starts the server; the warning says why."""
    path = tmp_path / "m.toml"
    path.write_text("[hls]\nmux_threads = 4\nsegment_duration = 4\n")
    with caplog.at_level(logging.WARNING, logger="mediacore.app.config"):
        cfg = load_config(path)
    assert cfg.hls.segment_duration == 4.0 and not hasattr(cfg.hls, "mux_threads")
    assert "hls.mux_threads is no longer used" in caplog.text
    path.write_text("[llhls]\nmux_threads = 4\n")  # retired in [hls] only
    with pytest.raises(ConfigError, match="unknown setting llhls.mux_threads"):
        load_config(path)


def test_example_configuration_is_complete_and_valid():
    """mediacore.example.toml lists every setting with its default."""
    import dataclasses
    import tomllib

    from conftest import ROOT

    from mediacore.app.config import Config

    path = ROOT / "mediacore.example.toml"
    loaded = load_config(path)
    data = tomllib.loads(path.read_text())
    defaults = Config()
    for section in dataclasses.fields(Config):
        if section.name == "plugin_settings":  # the plugins' own sections, each checked by its plugin
            continue
        listed = set(data.get(section.name, {}))
        known = {f.name for f in dataclasses.fields(getattr(defaults, section.name))}
        assert known - listed <= {"publish_keys"}, (section.name, known - listed)
        for key in listed:
            assert getattr(getattr(loaded, section.name), key) == getattr(getattr(defaults, section.name), key)
