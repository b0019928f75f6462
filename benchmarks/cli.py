"""`mediacore-bench SUITE`: run a benchmark suite, print a table, write JSON."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mediacore-bench", description="mediacore benchmark suites")
    sub = parser.add_subparsers(dest="suite", required=True)
    ingest = sub.add_parser("ingest", help="server CPU and memory per real-time RTMP stream, vs nginx-rtmp")
    ingest.add_argument("--streams", type=int, default=4, help="concurrent ffmpeg pushes (default 4)")
    ingest.add_argument("--seconds", type=float, default=20.0, help="measured seconds (default 20)")
    ingest.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (default 5)")
    ingest.add_argument("--no-peers", action="store_true", help="skip nginx-rtmp even if installed")
    ingest.add_argument(
        "--workers", type=int, default=1, help="also run `mediacore serve --workers N` and compare it (default 1)"
    )
    ingest.add_argument(
        "--cpu-affinity",
        action="store_true",
        help="pin every server to CPUs of its own ([server] cpu_affinity; nginx-rtmp to mediacore's first)",
    )
    ingest.add_argument(
        "--tcp-nodelay",
        action="store_true",
        help="push with ffmpeg -tcp_nodelay 1: each message's header and body in one segment, one wake-up",
    )
    ingest.add_argument(
        "--memory-samples",
        type=positive_int,
        help="RSS and media-held samples after the CPU window (default: enough to span several segment cuts)",
    )
    ingest.add_argument("--json", type=Path, help="where to write results (default bench-results/ingest-TIME.json)")
    replay = sub.add_parser("replay", help="CPU of ingest -> HLS + LL-HLS in one process, a recorded push replayed")
    replay.add_argument("--streams", type=int, default=8, help="streams replaying the recording at once (default 8)")
    replay.add_argument("--seconds", type=float, default=30.0, help="seconds of push recorded, once (default 30)")
    replay.add_argument("--speed", type=float, default=4.0, help="times real time (default 4)")
    replay.add_argument("--runs", type=int, default=3, help="replays; the best is reported (default 3)")
    replay.add_argument("--json", type=Path, help="where to write results (default bench-results/replay-TIME.json)")
    latency = sub.add_parser("latency", help="LL-HLS live latency in hls.js and the player client")
    latency.add_argument("--seconds", type=float, default=60.0, help="seconds of LL-HLS playback (default 60)")
    latency.add_argument("--json", type=Path, help="where to write results (default bench-results/latency-TIME.json)")
    latency.add_argument(
        "--part-duration", type=float, help="[llhls] part_duration of the server (default: its default, 0.2 s)"
    )
    fanout = sub.add_parser("fanout", help="origin + edges + simulated viewers: offload, hit ratio, latency")
    fanout.add_argument("--edges", type=int, default=2)
    fanout.add_argument("--tiers", type=int, default=1, choices=[1, 2], help="2 puts a mid-tier edge in between")
    fanout.add_argument("--viewers", type=int, default=200)
    fanout.add_argument("--seconds", type=float, default=30.0)
    fanout.add_argument("--hls", action="store_true", help="plain HLS viewers instead of LL-HLS")
    fanout.add_argument("--json", type=Path, help="where to write results (a PNG is written beside it)")
    edge = sub.add_parser("edge", help="edge vs nginx on cached objects (wrk), and LL-HLS viewers on one edge")
    edge.add_argument("--seconds", type=float, default=10.0, help="seconds per wrk run (default 10)")
    edge.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    edge.add_argument("--viewers", type=int, default=300, help="LL-HLS viewers on the edge (default 300)")
    edge.add_argument("--workers", type=int, default=1, help="edge workers, and nginx worker_processes (default 1)")
    edge.add_argument("--threads", type=int, default=0, help="wrk threads (default: one per worker)")
    edge.add_argument(
        "--cpu-affinity",
        action="store_true",
        help="pin the edge's workers to CPUs of their own (edge --cpu-affinity), nginx's too",
    )
    edge.add_argument(
        "--viewer-nice",
        type=int,
        default=0,
        help="niceness of the LL-HLS viewers' client processes (default 0): above 0 they take the CPU "
        "the edge and the origin leave, as load from other machines would",
    )
    edge.add_argument(
        "--viewer-seconds", type=float, help="how long the LL-HLS viewers play (default: edge.VIEWER_SECONDS)"
    )
    edge.add_argument("--json", type=Path, help="where to write results")
    rtp = sub.add_parser("rtp", help="RTP parse + jitter buffer packets/s (vs aiortc when installed); queues")
    rtp.add_argument("--packets", type=int, default=200_000)
    rtp.add_argument("--json", type=Path, help="where to write results")
    soak = sub.add_parser(
        "soak", help="long run: publishers, viewers, publisher drops, hostile peers; leaks and stalls"
    )
    soak.add_argument("--minutes", type=float, default=10.0, help="minutes under load (default 10)")
    soak.add_argument("--publishers", type=int, default=8, help="real-time ffmpeg RTMP publishers (default 8)")
    soak.add_argument("--viewers", type=int, default=200, help="simulated viewers, half LL-HLS (default 200)")
    soak.add_argument(
        "--metrics-url", help="the server's Prometheus metrics (default: /metrics on the soak server's admin listener)"
    )
    soak.add_argument("--seed", type=int, default=1, help="seed of the drops and the hostile peers' order")
    soak.add_argument("--json", type=Path, help="where to write results")
    commerce = sub.add_parser("commerce", help="purchase attempts/s and p50/p99 over HTTP, SQLite and Redis")
    commerce.add_argument("--buyers", type=int, default=200, help="concurrent buyers (default 200)")
    commerce.add_argument("--attempts", type=int, default=10_000, help="purchase attempts per backend (default 10000)")
    commerce.add_argument(
        "--backend", choices=["sqlite", "redis", "both"], default="both", help="store backend (default both)"
    )
    commerce.add_argument("--json", type=Path, help="where to write results")
    chat = sub.add_parser("chat", help="N WebSocket chat clients in one room: deliveries/s, p50/p99 latency, losses")
    chat.add_argument("--clients", type=int, default=1000, help="receiving clients (default 1000)")
    chat.add_argument("--senders", type=int, default=4, help="sending clients (default 4)")
    chat.add_argument("--rate", type=float, default=20.0, help="messages per second in, over all senders (default 20)")
    chat.add_argument("--seconds", type=float, default=20.0, help="seconds of sending (default 20)")
    chat.add_argument("--redis", action="store_true", help="the room on a redis-server started for the run")
    chat.add_argument("--nodes", type=int, default=1, help="mediacore serve processes (above 1 needs --redis)")
    chat.add_argument("--json", type=Path, help="where to write results (default bench-results/chat-TIME.json)")
    recs = sub.add_parser("recs", help="recommendation quality (HR/NDCG@10 vs most-popular) and update latency")
    recs.add_argument("--seed", type=int, default=7, help="seed of the synthetic behaviour log (default 7)")
    recs.add_argument("--users", type=int, default=1200, help="synthetic users (default 1200)")
    recs.add_argument("--update-interval", type=float, default=1.0, help="model refresh period, s (default 1)")
    recs.add_argument("--json", type=Path, help="where to write results (a PNG is written beside it)")
    events = sub.add_parser("events", help="behaviour events/s posted to the audience plugin vs playlist p99")
    events.add_argument("--rate", type=float, default=50_000.0, help="events per second offered (default 50000)")
    events.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    events.add_argument("--seconds", type=float, default=10.0, help="seconds per phase (default 10)")
    events.add_argument("--json", type=Path, help="where to write results")
    events.add_argument(
        "--via",
        choices=["http", "websocket"],
        default="http",
        help="POST /api/audience/events (default) or one WebSocket /live/STREAM/events per connection",
    )
    events.add_argument(
        "--loop-lag",
        type=int,
        metavar="ROUNDS",
        help="instead: the event loop's timer lag with a busy recommender thread at GIL switch intervals 5 and 1 ms",
    )
    thumbnails = sub.add_parser("thumbnails", help="CPU per watched stream of its thumbnail (720p keyframe -> JPEG)")
    thumbnails.add_argument("--rounds", type=int, default=200, help="thumbnails rendered per clip (default 200)")
    thumbnails.add_argument(
        "--interval", type=float, help="seconds between thumbnails (default [http] thumbnail_interval)"
    )
    thumbnails.add_argument("--width", type=int, help="thumbnail width (default [http] thumbnail_width)")
    thumbnails.add_argument("--json", type=Path, help="where to write results")
    args = parser.parse_args(argv)
    if args.suite == "chat":
        from benchmarks import chat as chat_suite

        out = args.json or Path("bench-results") / f"chat-{time.strftime('%Y%m%d-%H%M%S')}.json"
        chat_suite.run(args.clients, args.senders, args.rate, args.seconds, args.redis, args.nodes, out)
    elif args.suite == "ingest":
        from benchmarks import ingest as suite

        out = args.json or Path("bench-results") / f"ingest-{time.strftime('%Y%m%d-%H%M%S')}.json"
        suite.run(
            args.streams,
            args.seconds,
            args.warmup,
            out,
            peers=not args.no_peers,
            workers=args.workers,
            cpu_affinity=args.cpu_affinity,
            memory_samples=suite.MEMORY_SAMPLES if args.memory_samples is None else args.memory_samples,
            tcp_nodelay=args.tcp_nodelay,
        )
    elif args.suite == "replay":
        from benchmarks import replay as replay_suite

        out = args.json or Path("bench-results") / f"replay-{time.strftime('%Y%m%d-%H%M%S')}.json"
        replay_suite.run(args.streams, args.seconds, args.speed, args.runs, out)
    elif args.suite == "rtp":
        from benchmarks import rtp as rtp_suite

        out = args.json or Path("bench-results") / f"rtp-{time.strftime('%Y%m%d-%H%M%S')}.json"
        rtp_suite.run(args.packets, out)
    elif args.suite == "edge":
        from benchmarks import edge as edge_suite

        out = args.json or Path("bench-results") / f"edge-{time.strftime('%Y%m%d-%H%M%S')}.json"
        edge_suite.run(
            args.seconds,
            args.connections,
            args.viewers,
            out,
            args.workers,
            args.threads,
            args.cpu_affinity,
            args.viewer_nice,
            args.viewer_seconds,
        )
    elif args.suite == "fanout":
        from benchmarks import fanout as fanout_suite

        out = args.json or Path("bench-results") / f"fanout-{time.strftime('%Y%m%d-%H%M%S')}.json"
        fanout_suite.run(args.edges, args.tiers, args.viewers, args.seconds, not args.hls, out)
    elif args.suite == "latency":
        from benchmarks import latency as latency_suite

        out = args.json or Path("bench-results") / f"latency-{time.strftime('%Y%m%d-%H%M%S')}.json"
        latency_suite.run(args.seconds, out, args.part_duration)
    elif args.suite == "commerce":
        from benchmarks import commerce as commerce_suite

        out = args.json or Path("bench-results") / f"commerce-{time.strftime('%Y%m%d-%H%M%S')}.json"
        backends = ["sqlite", "redis"] if args.backend == "both" else [args.backend]
        commerce_suite.run(args.buyers, args.attempts, backends, out)
    elif args.suite == "recs":
        from benchmarks import recs as recs_suite

        out = args.json or Path("bench-results") / f"recs-{time.strftime('%Y%m%d-%H%M%S')}.json"
        recs_suite.run(args.seed, args.users, args.update_interval, out)
    elif args.suite == "events":
        from benchmarks import events as events_suite

        out = args.json or Path("bench-results") / f"events-{time.strftime('%Y%m%d-%H%M%S')}.json"
        if args.loop_lag:
            events_suite.loop_lag(args.loop_lag, 4.0, out)
            return 0
        report = events_suite.run(args.rate, args.clients, args.seconds, out, args.via)
        return 0 if report["met"] else 1
    elif args.suite == "thumbnails":
        from benchmarks import thumbnails as thumbnails_suite

        out = args.json or Path("bench-results") / f"thumbnails-{time.strftime('%Y%m%d-%H%M%S')}.json"
        report = thumbnails_suite.run(args.rounds, args.interval, args.width, out)
        return 0 if report["within_budget"] else 1
    elif args.suite == "soak":
        from benchmarks import soak as soak_suite

        return soak_suite.run(args.minutes, args.publishers, args.viewers, args.metrics_url, args.seed, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
