"""`mediacore serve`, `mediacore demo`, `mediacore edge` and `mediacore sign-url`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from mediacore.access.tokens import MIN_SECRET_BYTES, TOKEN_PARAM, TokenError, sign
from mediacore.app.affinity import pin_process
from mediacore.app.config import Config, ConfigError, check_open_publish, load_config, publish_is_open
from mediacore.app.memory import pin_mmap_threshold, trim_heap_periodically
from mediacore.app.supervision import WORKER_RESTART_WINDOW, WORKER_RESTARTS, RestartBudget
from mediacore.app.worker import WorkerRole, take_jwt_secret, worker_count
from mediacore.model.names import PUBLISH_APP, is_stream_name
from mediacore.playlist.uris import STREAM_ROOT, WATCH_PAGE, playback_urls

SECRET_ENV = "MEDIACORE_PLAYBACK_SECRET"
"""Environment variable an edge (or sign-url) reads the playback secret from when no file is given."""

log = logging.getLogger("mediacore")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediacore", description="Live-streaming engine for live commerce")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("serve", "run the server"), ("demo", "run the server with a built-in test stream")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", help="TOML configuration file")
        p.add_argument("--host", help="address to listen on (default 0.0.0.0)")
        p.add_argument("--rtmp-port", type=int, help="RTMP ingest port (default 1935)")
        p.add_argument("--rtsp-port", type=int, help="RTSP ingest port (default 8554)")
        p.add_argument("--http-port", type=int, help="HTTP origin port (default 8080)")
        p.add_argument("--admin-port", type=int, help="admin listener port, on [admin] host (default 8090; 0: any)")
        p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
        p.add_argument(
            "--cpu-affinity",
            action="store_true",
            default=None,
            help="pin the server to one CPU, each worker to its own ([server] cpu_affinity)",
        )
        if name == "demo":
            p.add_argument("--stream", help="demo stream name (default demo)")
        else:
            p.add_argument(
                "--workers",
                default="auto",
                help="worker processes, each a full origin (default 'auto': one per core the process may use)",
            )
            p.add_argument("--worker", help=argparse.SUPPRESS)  # set by the parent of --workers N
    edge = sub.add_parser("edge", help="run an edge node (cache + request collapsing) in front of an origin")
    edge.add_argument(
        "--origin",
        action="append",
        required=True,
        help="origin base URL, e.g. http://origin:8080; repeat for the nodes of an origin cluster "
        "(tried in order; each redirects to a stream's owner)",
    )
    edge.add_argument(
        "--upstream",
        action="append",
        default=[],
        help="upstream to use instead of the origin (another edge: tiers); repeat for failover",
    )
    edge.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    edge.add_argument("--http-port", type=int, default=8081, help="HTTP port (default 8081)")
    edge.add_argument("--cache-mb", type=int, default=512, help="cache budget in MiB (default 512)")
    edge.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        help="worker processes sharing the port (default 1; 'auto': one per core); each stream is fetched "
        "upstream by one of them",
    )
    edge.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        help="address of a downstream edge or proxy whose X-Forwarded-For names the viewer "
        "(a mid-tier edge lists its edges here); repeat for several",
    )
    edge.add_argument(
        "--playback-secret-file",
        help=f"file holding the origin's [auth] playback_secret (or set {SECRET_ENV}): "
        "the edge then checks playback tokens itself and caches protected streams",
    )
    edge.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    edge.add_argument("--cpu-affinity", action="store_true", help="pin the edge to one CPU, each worker to its own")
    signer = sub.add_parser("sign-url", help="print a playback URL with a signed, expiring token added")
    signer.add_argument(
        "url", help="a stream URL: .../live/STREAM/index.m3u8, .../live/STREAM/ll.m3u8, .../watch/STREAM"
    )
    source = signer.add_mutually_exclusive_group()
    source.add_argument("--config", help="TOML configuration holding [auth] playback_secret")
    source.add_argument("--secret-file", help=f"file holding the playback secret (default: {SECRET_ENV})")
    signer.add_argument("--ttl", type=int, required=True, help="seconds the token stays valid")
    signer.add_argument("--viewer", default="", help="viewer id written into the token (letters, digits, - and _)")
    return parser


def read_secret(path: str | None) -> str:
    """The playback secret from a file (surrounding whitespace dropped), else from SECRET_ENV;
    never from the command line, where other users of the machine could read it."""
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(SECRET_ENV, "")


def stream_of_url(url: str) -> str:
    """The stream a playback URL names (/live/STREAM/... or /watch/STREAM)."""
    path = urlsplit(url).path
    for pattern in (STREAM_ROOT, WATCH_PAGE):
        prefix = pattern.split("{", 1)[0]
        if path.startswith(prefix):
            name = unquote(path[len(prefix) :].split("/", 1)[0])
            if is_stream_name(name):
                return name
    raise ValueError(f"{url} is not a stream URL (/live/STREAM/... or /watch/STREAM)")


def signed_url(url: str, secret: str, ttl: int, viewer: str, now: float) -> str:
    """`url` with `token=` added (before any fragment), valid for `ttl` seconds from `now`."""
    token = sign(secret.encode(), stream_of_url(url), int(now) + ttl, viewer)
    base, hash_mark, fragment = url.partition("#")
    return f"{base}{'&' if '?' in base else '?'}{TOKEN_PARAM}={token}{hash_mark}{fragment}"


def _sign_url(args: argparse.Namespace) -> int:
    try:
        secret = load_config(args.config).auth.playback_secret if args.config else read_secret(args.secret_file)
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"no playback secret of at least {MIN_SECRET_BYTES} bytes (--config, --secret-file or {SECRET_ENV})"
            )
        if args.ttl <= 0:
            raise ValueError("--ttl must be positive")
        print(signed_url(args.url, secret, args.ttl, args.viewer, time.time()))
    except (ConfigError, OSError, ValueError, TokenError) as e:
        print(f"mediacore sign-url: {e}", file=sys.stderr)
        return 2
    return 0


async def _run_edge(args: argparse.Namespace, worker: int = 0, peers: list[socket.socket] | None = None) -> None:
    """One edge process: the whole edge, or worker `worker` of `len(peers)` sharing the port."""
    from edge.server import EdgeConfig, run_edge

    peer_urls = [f"http://127.0.0.1:{sock.getsockname()[1]}" for sock in peers or []]
    config = EdgeConfig(
        upstreams=args.upstream or args.origin,
        cache_mb=args.cache_mb,
        trusted_proxies=args.trusted_proxy,
        playback_secret=args.playback_secret,
        worker=worker,
        peers=peer_urls,
    )
    peer_socket = peers[worker] if peers else None
    runner, port = await run_edge(config, args.host, args.http_port, reuse_port=bool(peers), peer_socket=peer_socket)
    _freeze_startup_heap()  # as `serve` does: full collections need not walk the startup heap
    if worker == 0:
        print(f"edge serving on http://{args.host}:{port} in front of {', '.join(config.upstreams)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _edge_workers(args: argparse.Namespace) -> int:
    """`mediacore edge --workers N` (N > 1): the supervisor forks the workers and restarts any that dies."""
    import uvloop

    from edge.supervisor import peer_listeners, reserve_port, supervise

    try:
        reservation = reserve_port(args.host, args.http_port)
    except OSError as e:
        print(f"mediacore edge: cannot listen on {args.host}:{args.http_port}: {e}", file=sys.stderr)
        return 2
    args.http_port = reservation.getsockname()[1]  # port 0 resolves once, for every worker
    peers = peer_listeners(args.workers)

    def worker(index: int) -> int:
        if args.cpu_affinity:
            pin_process(index)
        try:
            uvloop.run(_run_edge(args, index, peers))
        except KeyboardInterrupt:
            pass
        return 0

    restarts = RestartBudget(WORKER_RESTARTS, WORKER_RESTART_WINDOW)

    def may_restart(index: int) -> bool:
        return restarts.allow(str(index), "edge-worker", time.monotonic())

    def given_up(index: int) -> None:
        peers[index].close()  # siblings asking the dead worker fail at once instead of waiting in its backlog

    try:
        return supervise(args.workers, worker, may_restart, given_up)
    finally:
        for sock in (reservation, *peers):
            sock.close()


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Flags for serve/demo as configuration overrides (flags win over the file)."""
    server: dict[str, Any] = {}
    for flag, key in (
        ("host", "host"),
        ("rtmp_port", "rtmp_port"),
        ("rtsp_port", "rtsp_port"),
        ("http_port", "http_port"),
        ("cpu_affinity", "cpu_affinity"),
    ):
        value = getattr(args, flag)
        if value is not None:
            server[key] = value
    out: dict[str, dict[str, Any]] = {"server": server}
    if args.admin_port is not None:
        out["admin"] = {"port": args.admin_port}
    if getattr(args, "stream", None):
        out["demo"] = {"stream": args.stream}
    return out


def demo_publish_key(config: Config) -> str:
    """The key `mediacore demo` pushes its stream with. On a server where anyone could
    publish (no default key, no hook) the demo makes one up and makes it the default key, so
    the demo can listen on every address of a fresh machine without opening publishing to
    all; it prints the key, for a person to push a stream of their own."""
    auth = config.auth
    if publish_is_open(auth) and config.demo.stream not in auth.publish_keys:
        auth.default_publish_key = secrets.token_urlsafe(12)
    return auth.publish_keys.get(config.demo.stream, auth.default_publish_key)


def enable_demo_shop(config: Config) -> None:
    """`mediacore demo` runs the commerce plugin's demo shop (a seeded catalogue and flash
    sale, a product card on the demo stream every few seconds) and lets the watch page get
    guest tokens to buy and chat with, even when it listens beyond loopback, unless the file
    says otherwise."""
    if "commerce" in config.plugins.enabled:
        settings = config.plugin_settings.setdefault("commerce", {})
        settings.setdefault("demo", True)
        settings.setdefault("demo_stream", config.demo.stream)
    if "accounts" in config.plugins.enabled:
        config.plugin_settings.setdefault("accounts", {}).setdefault("guests", True)
    if "chat" in config.plugins.enabled:
        config.plugin_settings.setdefault("chat", {}).setdefault("guests_may_write", True)


SWITCH_INTERVAL = 0.001
"""Seconds a thread may hold the GIL while another waits for it (Python's default: 0.005).
The event loop shares the interpreter with worker threads running Python (the audience
plugin's model refresh, the SQLite writer, muxing a large segment): each time the loop gave the GIL up for
I/O it could wait the whole interval to get it back. With a thread refreshing the
recommender without pause, the loop's 2 ms timer fired 5.5-5.9 ms late (p50) at 5 ms and
1.3-1.7 ms late at 1 ms (`mediacore-bench events --loop-lag 3`, docs/performance.md)."""


def _tune_interpreter() -> None:
    """The serving process's interpreter settings: the GIL's switch interval (above) and
    the frozen startup heap (below)."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    _freeze_startup_heap()


def _freeze_startup_heap() -> None:
    """Move every object the start made (modules, classes, functions, the engine's and the
    plugins' long-lived state: ~80,000 objects) out of the garbage collector's view. A full
    collection walks every tracked object; with a steady stream of short-lived objects
    (requests, behaviour events in flight) one runs about once a second, and walking the
    startup heap made each one stall the event loop for 50 to 110 ms (`mediacore-bench
    events`, docs/performance.md). Frozen objects are never collected: only what exists now,
    once, so nothing accumulates."""
    gc.collect()
    gc.freeze()


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The `serve` arguments the parent of --workers N passes on to each worker (it adds the
    ports it resolved)."""
    argv = ["--config", args.config] if args.config else []
    if args.host is not None:
        argv += ["--host", args.host]
    if args.admin_port is not None:
        argv += ["--admin-port", str(args.admin_port)]
    if args.cpu_affinity:
        argv.append("--cpu-affinity")
    return argv + ["--log-level", args.log_level]


async def _run(config: Config, demo: bool, worker: WorkerRole | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then drain ([server] drain_timeout) and stop; a second
    signal stops at once. 0 after a drain, 1 if a second signal cut it short. `worker`: as
    one worker of `serve --workers N` (the parent prints the ready line)."""
    from mediacore.app.engine import Engine

    engine = Engine(config, worker=worker)
    publisher = None
    stop = asyncio.Event()
    abort = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        (abort if stop.is_set() else stop).set()

    for sig in (signal.SIGINT, signal.SIGTERM):  # before start: a signal while starting drains after it
        loop.add_signal_handler(sig, on_signal)
    await engine.start()
    _tune_interpreter()
    trimming = asyncio.create_task(trim_heap_periodically(), name="heap-trim")
    code = 0
    try:
        if demo:
            from mediacore.app.demo import demo_command

            name = config.demo.stream
            key = demo_publish_key(config)  # main() made it up already, if it had to
            query = f"?key={key}" if key else ""
            url = f"rtmp://127.0.0.1:{engine.rtmp_port}/{PUBLISH_APP}/{name}{query}"
            publisher = await asyncio.create_subprocess_exec(*demo_command(url, config.demo))
            urls = playback_urls(engine.base_url(), name)
            if key and config.auth.default_publish_key == key:
                print(
                    f"publish your own stream: rtmp://HOST:{engine.rtmp_port}/{PUBLISH_APP}/STREAM{query}", flush=True
                )
            print(f"demo stream publishing; watch it at {urls['watch']}", flush=True)
            print(f"HLS playlist: {urls['hls']}", flush=True)
        elif worker is None:
            print(
                f"mediacore serving: rtmp://HOST:{engine.rtmp_port}/{PUBLISH_APP}/STREAM -> "
                f"{playback_urls(engine.base_url(), 'STREAM')['watch']}",
                flush=True,
            )
        await stop.wait()
        log.info("shutting down: draining for up to %g s (a second signal stops at once)", config.server.drain_timeout)
        drain = asyncio.create_task(engine.drain())
        aborted = asyncio.create_task(abort.wait())
        await asyncio.wait({drain, aborted}, return_when=asyncio.FIRST_COMPLETED)
        aborted.cancel()
        if not drain.done():
            log.warning("second signal: stopping without finishing the drain")
            drain.cancel()
            code = 1
        try:
            await drain
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("the drain failed; stopping")
            code = 1
    finally:
        trimming.cancel()
        if publisher is not None and publisher.returncode is None:
            publisher.terminate()
            try:
                await asyncio.wait_for(publisher.wait(), 5)
            except TimeoutError:
                publisher.kill()
        await engine.stop()
    return code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "sign-url":
        return _sign_url(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pin_mmap_threshold()
    if args.command == "edge":
        import uvloop

        try:
            args.playback_secret = read_secret(args.playback_secret_file)
        except OSError as e:
            print(f"mediacore edge: {e}", file=sys.stderr)
            return 2
        if args.playback_secret and len(args.playback_secret.encode()) < MIN_SECRET_BYTES:
            print(f"mediacore edge: the playback secret must be at least {MIN_SECRET_BYTES} bytes", file=sys.stderr)
            return 2
        if args.workers > 1:
            return _edge_workers(args)
        if args.cpu_affinity:
            pin_process(0)
        try:
            uvloop.run(_run_edge(args))
        except KeyboardInterrupt:
            pass
        return 0
    try:
        config = load_config(args.config, _overrides(args))
        if args.command == "demo":
            demo_publish_key(config)  # a made-up key closes open publishing: checked next
            enable_demo_shop(config)
        check_open_publish(config)
    except (ConfigError, OSError) as e:
        print(f"mediacore: configuration error: {e}", file=sys.stderr)
        return 2
    role = None
    count = 1
    if args.command == "serve":
        try:
            role = WorkerRole.parse(args.worker) if args.worker else None
            if role is not None:
                take_jwt_secret(config)
            count = worker_count(args.workers)
        except ValueError as e:
            print(f"mediacore: {e}", file=sys.stderr)
            return 2
    if config.server.cpu_affinity and (role is not None or count == 1):  # the parent of workers floats
        pin_process(role.index if role is not None else 0)
    try:
        import uvloop

        if role is None and count > 1:
            from mediacore.app.workers import Parent

            return uvloop.run(Parent(config, _worker_argv(args), count).run())
        return uvloop.run(_run(config, demo=args.command == "demo", worker=role))
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
