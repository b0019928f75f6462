"""Playback tokens without a network: the signing rule, the playlist rewrite that carries a
token on every URI, the configuration and `mediacore sign-url`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mediacore.access.tokens import (
    MAX_TOKEN,
    MAX_VIEWER,
    PlaybackPolicy,
    TokenError,
    Verdict,
    sign,
    verify,
)
from mediacore.app.cli import main, signed_url, stream_of_url
from mediacore.app.config import ConfigError, load_config
from mediacore.playlist.media import MediaPlaylist
from mediacore.playlist.multivariant import MultivariantPlaylist
from mediacore.playlist.query import with_query, without_query

SECRET = b"0123456789abcdef-units"
NOW = 1_750_000_000.0
GOLDEN = sorted((ROOT / "tests" / "data" / "golden").glob("*.m3u8"))
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_a_token_is_valid_for_its_stream_until_it_expires():
    token = sign(SECRET, "shop1", int(NOW) + 60, "viewer-42")
    assert re.fullmatch(r"[0-9]+\.viewer-42\.[A-Za-z0-9_-]{43}", token)
    assert verify(SECRET, token, "shop1", NOW) is Verdict.VALID
    assert verify(SECRET, token, "shop1", NOW + 59.9) is Verdict.VALID
    assert verify(SECRET, token, "shop1", NOW + 60) is Verdict.EXPIRED
    assert Verdict.EXPIRED.status == 410 and Verdict.FORBIDDEN.status == 403


def test_a_token_without_viewer_id():
    token = sign(SECRET, "shop1", int(NOW) + 60)
    assert token.split(".")[1] == ""
    assert verify(SECRET, token, "shop1", NOW) is Verdict.VALID


def test_a_token_is_forbidden_for_another_stream_secret_or_any_change():
    token = sign(SECRET, "shop1", int(NOW) + 60, "v1")
    expiry, viewer, sig = token.split(".")
    assert verify(SECRET, token, "shop2", NOW) is Verdict.FORBIDDEN
    assert verify(b"another-secret-of-16+", token, "shop1", NOW) is Verdict.FORBIDDEN
    assert verify(SECRET, f"{int(expiry) + 3600}.{viewer}.{sig}", "shop1", NOW) is Verdict.FORBIDDEN
    assert verify(SECRET, f"{expiry}.v2.{sig}", "shop1", NOW) is Verdict.FORBIDDEN
    assert verify(SECRET, f"{expiry}..{sig}", "shop1", NOW) is Verdict.FORBIDDEN
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    assert verify(SECRET, f"{expiry}.{viewer}.{flipped}", "shop1", NOW) is Verdict.FORBIDDEN
    for missing in (None, ""):
        assert verify(SECRET, missing, "shop1", NOW) is Verdict.FORBIDDEN
    assert verify(b"", token, "shop1", NOW) is Verdict.FORBIDDEN  # no secret: nothing is valid


def test_an_expired_token_with_a_bad_signature_is_forbidden_not_expired():
    expiry, viewer, sig = sign(SECRET, "shop1", int(NOW) - 10).split(".")
    assert verify(SECRET, f"{expiry}.{viewer}.{sig}", "shop1", NOW) is Verdict.EXPIRED
    assert verify(SECRET, f"{expiry}.{viewer}.{'A' * 43}", "shop1", NOW) is Verdict.FORBIDDEN


def test_signing_refuses_short_secrets_bad_viewers_and_expiries():
    with pytest.raises(TokenError, match="16 bytes"):
        sign(b"short", "s", 1)
    for viewer in ("a b", "a.b", "é", "x" * (MAX_VIEWER + 1)):
        with pytest.raises(TokenError, match="viewer id"):
            sign(SECRET, "s", 1, viewer)
    with pytest.raises(TokenError, match="expiry"):
        sign(SECRET, "s", -1)
    assert len(sign(SECRET, "s", 10**12 - 1, "x" * MAX_VIEWER)) == MAX_TOKEN


@FUZZ
@given(st.text(max_size=400) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
@example("1." + "a" * 64 + "." + "A" * 43)
@example("9" * 13 + "..x")
@example("..")
@example("١٢٣.." + "A" * 43)  # non-ASCII digits
def test_any_text_is_a_forbidden_token_never_an_exception(text: str):
    assert verify(SECRET, text, "shop1", NOW) is Verdict.FORBIDDEN


@FUZZ
@given(st.integers(1, 10**12 - 1), st.from_regex(r"[A-Za-z0-9_-]{0,64}", fullmatch=True), st.data())
def test_any_change_to_a_valid_token_is_forbidden(expires: int, viewer: str, data: st.DataObject):
    token = sign(SECRET, "shop1", expires, viewer)
    i = data.draw(st.integers(0, len(token) - 1))
    c = data.draw(st.characters(codec="ascii"))
    changed = token[:i] + c + token[i + 1 :]
    assert verify(SECRET, token, "shop1", 0) is Verdict.VALID
    if changed != token:
        assert verify(SECRET, changed, "shop1", 0) is Verdict.FORBIDDEN


def test_which_streams_a_policy_protects():
    assert not PlaybackPolicy().protects("a")
    assert PlaybackPolicy(SECRET, ("a",)).protects("a") and not PlaybackPolicy(SECRET, ("a",)).protects("b")
    assert PlaybackPolicy(SECRET, ("*",)).protects("b")


# The playlist rewrite -------------------------------------------------------------------


def uris(text: str) -> list[str]:
    """Every URI of a playlist, read back with the playlist model."""
    if "#EXT-X-STREAM-INF" in text:
        mv = MultivariantPlaylist.parse(text)
        return [v.uri for v in mv.variants] + [a.uri for a in mv.audio]
    pl = MediaPlaylist.parse(text)
    found = [r.uri for r in pl.rendition_reports] + ([pl.preload_hint] if pl.preload_hint else [])
    for seg in pl.segments:
        found += [p.uri for p in seg.parts] + [u for u in (seg.uri, seg.map_uri) if u]
    return found


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_every_uri_of_a_playlist_carries_the_token_and_the_rewrite_undoes(path: Path):
    text = path.read_text()
    token = sign(SECRET, "shop1", int(NOW), "v")
    rewritten = with_query(text, "token", token)
    found = uris(rewritten)
    assert found and all(u.endswith(f"?token={token}") for u in found), found
    assert len(found) == len(uris(text))
    assert rewritten.count("token=") == len(re.findall(r"\.(?:m3u8|m4s|ts|mp4)\b", text))  # nothing else touched
    assert without_query(rewritten, "token") == text
    assert without_query(text, "token") == text


def test_the_rewrite_keeps_other_parameters_and_fragments():
    text = '#EXTM3U\n#EXT-X-MAP:URI="i.mp4?a=1"\n#EXTINF:2.0,\ns.ts?x=1&token=old#f\n'
    assert with_query(text, "token", "t") == '#EXTM3U\n#EXT-X-MAP:URI="i.mp4?a=1&token=t"\n#EXTINF:2.0,\n' + (
        "s.ts?x=1&token=old&token=t#f\n"
    )
    assert without_query(text, "token") == '#EXTM3U\n#EXT-X-MAP:URI="i.mp4?a=1"\n#EXTINF:2.0,\ns.ts?x=1#f\n'
    assert with_query("#EXTM3U\r\na.ts\r\n", "token", "a b") == "#EXTM3U\r\na.ts?token=a%20b\r\n"


# Configuration and sign-url ----------------------------------------------------------------


def test_playback_settings_are_validated():
    cfg = load_config(None, {"auth": {"playback_secret": "x" * 16, "playback_streams": ["shop1", "*"]}})
    policy = cfg.auth.playback_policy()
    assert policy.protects("shop1") and policy.secret == b"x" * 16
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        load_config(None, {"auth": {"playback_secret": "short", "playback_streams": ["shop1"]}})
    with pytest.raises(ConfigError, match="not a stream name"):
        load_config(None, {"auth": {"playback_secret": "x" * 16, "playback_streams": ["a/b"]}})
    assert not load_config(None, {"auth": {"playback_secret": "short"}}).auth.playback_policy().protects("a")


def test_the_operator_guide_example_configuration_loads(tmp_path: Path):
    guide = (ROOT / "docs" / "operator-guide.md").read_text()
    section = guide.split("### Signed playback tokens", 1)[1]
    block = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "guide.toml"
    path.write_text(block)
    cfg = load_config(path)
    assert cfg.auth.playback_streams and len(cfg.auth.playback_secret) >= 16


def test_sign_url_adds_a_token_for_the_stream_of_the_url():
    url = signed_url("http://h:8080/live/shop1/ll.m3u8", "s" * 16, 60, "v", NOW)
    base, _, token = url.partition("?token=")
    assert base == "http://h:8080/live/shop1/ll.m3u8"
    assert verify(b"s" * 16, token, "shop1", NOW + 59) is Verdict.VALID
    watch = signed_url("http://h/watch/shop1?ll=1#x", "s" * 16, 60, "", NOW)
    assert re.fullmatch(r"http://h/watch/shop1\?ll=1&token=[^#]+#x", watch)
    assert stream_of_url("https://cdn/live/a-b_c/index.m3u8") == "a-b_c"
    with pytest.raises(ValueError, match="not a stream URL"):
        stream_of_url("http://h/api/streams")


def test_sign_url_command(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    secret = tmp_path / "secret"
    secret.write_text("0123456789abcdef0123\n")
    assert main(["sign-url", "http://h/live/s1/index.m3u8", "--secret-file", str(secret), "--ttl", "30"]) == 0
    token = capsys.readouterr().out.strip().partition("?token=")[2]
    assert verify(b"0123456789abcdef0123", token, "s1", NOW) is not Verdict.FORBIDDEN
    monkeypatch.setenv("MEDIACORE_PLAYBACK_SECRET", "short")
    assert main(["sign-url", "http://h/live/s1/index.m3u8", "--ttl", "30"]) == 2
    assert "at least 16 bytes" in capsys.readouterr().err
    assert main(["sign-url", "http://h/elsewhere", "--secret-file", str(secret), "--ttl", "30"]) == 2
