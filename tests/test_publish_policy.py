"""The sans-I/O publish policy: keys, the per-address limit on failed attempts, and who may
resume a reconnecting stream. No sockets; time is passed in."""

from __future__ import annotations

import logging

import pytest

from mediacore.app import publish_auth
from mediacore.app.config import AuthConfig
from mediacore.app.publish_auth import PublishPolicy, Refusal
from mediacore.app.publish_hook import shown_url
from mediacore.hub.publisher import PublishAttempt


def attempt(stream: str = "shop", key: str = "", remote: str = "10.0.0.1") -> PublishAttempt:
    return PublishAttempt(stream, key, "rtmp", remote)


def test_keys_per_stream_then_the_default_key():
    policy = PublishPolicy(AuthConfig(publish_keys={"vip": "v"}))
    assert policy.check(attempt("vip", "v"), None, 0.0) is None
    assert policy.check(attempt("vip", "w"), None, 0.0) == Refusal("key", "publish key is missing or wrong")
    assert policy.check(attempt("open", ""), None, 0.0) is None  # no default key: not checked
    policy = PublishPolicy(AuthConfig(publish_keys={"vip": "v"}, default_publish_key="d"))
    assert policy.check(attempt("open", "d"), None, 0.0) is None
    assert policy.check(attempt("open", "v"), None, 0.0) is not None
    assert policy.check(attempt("vip", "d"), None, 0.0) is not None  # a listed stream needs its own key


def test_an_attempt_never_shows_its_key():
    assert "s3cret" not in repr(attempt(key="s3cret"))


def test_failed_attempts_block_an_address_for_the_window_and_then_let_it_try_again(caplog):
    caplog.set_level(logging.WARNING, logger="mediacore.auth")
    policy = PublishPolicy(AuthConfig(default_publish_key="d", max_failed_publishes=3, failed_publish_window=60.0))
    for t in (0.0, 1.0, 2.0):
        assert policy.check(attempt(key="x"), None, t).reason == "key"  # type: ignore[union-attr]
    # Past the limit even the right key is refused, without being checked.
    assert policy.check(attempt(key="d"), None, 3.0) == Refusal(
        "rate_limited", "too many failed publish attempts; try again later"
    )
    assert policy.check(attempt(key="d", remote="10.0.0.2"), None, 3.0) is None  # another address
    assert policy.check(attempt(key="d"), None, 60.0) is None  # the window has passed
    # Hook refusals count too (the engine reports them with failed()).
    for t in (61.0, 62.0, 63.0):
        policy.failed(attempt(key="d"), Refusal("hook", "no"), t)
    assert policy.check(attempt(key="d"), None, 64.0).reason == "rate_limited"  # type: ignore[union-attr]


def test_a_burst_of_blocked_attempts_is_logged_once_per_power_of_two(caplog):
    caplog.set_level(logging.WARNING, logger="mediacore.auth")
    policy = PublishPolicy(AuthConfig(default_publish_key="d", max_failed_publishes=1))
    policy.check(attempt(key="x"), None, 0.0)
    for i in range(1000):
        assert policy.check(attempt(key="d"), None, 1.0 + i * 0.01) is not None
    blocked = [r.getMessage() for r in caplog.records if "too many failed attempts" in r.getMessage()]
    assert 10 < len(blocked) < 20, blocked  # the first ten, then 16, 32 ... 512
    assert len([r for r in caplog.records if "further attempts are refused" in r.getMessage()]) == 1


def test_the_failure_table_is_bounded(monkeypatch):
    monkeypatch.setattr(publish_auth, "MAX_TRACKED_ADDRESSES", 100)
    policy = PublishPolicy(AuthConfig(default_publish_key="d"))
    for i in range(1000):
        policy.check(attempt(key="x", remote=f"10.1.{i // 256}.{i % 256}"), None, 0.0)
    assert policy.tracked_addresses == 100


@pytest.mark.parametrize(
    "auth,first,second,allowed",
    [
        # A per-stream key names its streamer: any address may resume with it.
        (AuthConfig(publish_keys={"shop": "k"}), ("k", "10.0.0.1"), ("k", "10.0.0.9"), True),
        # The default key is shared: only the address that published may resume.
        (AuthConfig(default_publish_key="d"), ("d", "10.0.0.1"), ("d", "10.0.0.9"), False),
        (AuthConfig(default_publish_key="d"), ("d", "10.0.0.1"), ("d", "10.0.0.1"), True),
        # Open publishing: the same.
        (AuthConfig(), ("", "10.0.0.1"), ("", "10.0.0.9"), False),
        (AuthConfig(), ("", "10.0.0.1"), ("", "10.0.0.1"), True),
        (AuthConfig(), ("a", "10.0.0.1"), ("b", "10.0.0.1"), False),
        # Under a hook, the key it admitted names the streamer; another key may not resume.
        (AuthConfig(publish_hook="http://h/"), ("alice", "10.0.0.1"), ("alice", "10.0.0.9"), True),
        (AuthConfig(publish_hook="http://h/"), ("alice", "10.0.0.1"), ("mallory", "10.0.0.1"), False),
        (AuthConfig(publish_hook="http://h/"), ("", "10.0.0.1"), ("", "10.0.0.9"), False),
    ],
)
def test_only_the_same_credentials_resume_a_reconnecting_stream(auth, first, second, allowed):
    policy = PublishPolicy(auth)
    previous = attempt(key=first[0], remote=first[1])
    decision = policy.check(attempt(key=second[0], remote=second[1]), previous, 0.0)
    assert (decision is None) == allowed, decision
    if not allowed:
        assert decision is not None and decision.reason == "takeover"
        assert decision.message == "stream shop is reconnecting; only its publisher may resume it"
    # Not reconnecting (new, live or ended: no previous attempt): the name is free.
    assert policy.check(attempt(key=second[0], remote="10.9.9.9"), None, 0.0) is None


def test_the_hook_url_is_shown_without_query_or_credentials():
    assert shown_url("https://user:pw@shop.example:8443/hook?token=t#x") == "https://shop.example:8443/hook"


def test_after_a_key_rotation_the_new_key_resumes_and_the_old_one_cannot():
    auth = AuthConfig(publish_keys={"shop": "old"})
    policy = PublishPolicy(auth)
    previous = attempt(key="old", remote="10.0.0.1")
    auth.publish_keys["shop"] = "new"  # the operator rotated the key while the stream reconnects
    assert policy.check(attempt(key="new", remote="10.0.0.7"), previous, 0.0) is None
    refusal = policy.check(attempt(key="old", remote="10.0.0.1"), previous, 1.0)
    assert refusal is not None and refusal.reason == "key"
