"""`mediacore serve` and `mediacore demo`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from mediacore.app.config import Config, ConfigError, load_config
from mediacore.model.names import PUBLISH_APP
from mediacore.playlist.uris import playback_urls

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
        p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
        if name == "demo":
            p.add_argument("--stream", help="demo stream name (default demo)")
    edge = sub.add_parser("edge", help="run an edge node (cache + request collapsing) in front of an origin")
    edge.add_argument("--origin", required=True, help="origin base URL, e.g. http://origin:8080")
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
        "--trusted-proxy",
        action="append",
        default=[],
        help="address of a downstream edge or proxy whose X-Forwarded-For names the viewer "
        "(a mid-tier edge lists its edges here); repeat for several",
    )
    edge.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


async def _run_edge(args: argparse.Namespace) -> None:
    from edge.server import EdgeConfig, run_edge

    config = EdgeConfig(
        upstreams=args.upstream or [args.origin], cache_mb=args.cache_mb, trusted_proxies=args.trusted_proxy
    )
    runner, port = await run_edge(config, args.host, args.http_port)
    print(f"edge serving on http://{args.host}:{port} in front of {', '.join(config.upstreams)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Flags for serve/demo as configuration overrides (flags win over the file)."""
    server: dict[str, Any] = {}
    for flag, key in (
        ("host", "host"),
        ("rtmp_port", "rtmp_port"),
        ("rtsp_port", "rtsp_port"),
        ("http_port", "http_port"),
    ):
        value = getattr(args, flag)
        if value is not None:
            server[key] = value
    out: dict[str, dict[str, Any]] = {"server": server}
    if getattr(args, "stream", None):
        out["demo"] = {"stream": args.stream}
    return out


async def _run(config: Config, demo: bool) -> int:
    """Serve until SIGTERM or SIGINT, then drain ([server] drain_timeout) and stop; a second
    signal stops at once. 0 after a drain, 1 if a second signal cut it short."""
    from mediacore.app.engine import Engine

    engine = Engine(config)
    await engine.start()
    publisher = None
    stop = asyncio.Event()
    abort = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        (abort if stop.is_set() else stop).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    code = 0
    try:
        if demo:
            from mediacore.app.demo import demo_command

            name = config.demo.stream
            url = f"rtmp://127.0.0.1:{engine.rtmp_port}/{PUBLISH_APP}/{name}"
            publisher = await asyncio.create_subprocess_exec(*demo_command(url, config.demo))
            urls = playback_urls(engine.base_url(), name)
            print(f"demo stream publishing; watch it at {urls['watch']}", flush=True)
            print(f"HLS playlist: {urls['hls']}", flush=True)
        else:
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
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "edge":
        import uvloop

        try:
            uvloop.run(_run_edge(args))
        except KeyboardInterrupt:
            pass
        return 0
    try:
        config = load_config(args.config, _overrides(args))
    except (ConfigError, OSError) as e:
        print(f"mediacore: configuration error: {e}", file=sys.stderr)
        return 2
    try:
        import uvloop

        return uvloop.run(_run(config, demo=args.command == "demo"))
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
