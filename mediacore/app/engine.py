"""The engine: hub, packagers, stores, ingest servers and the origin, wired together and
owned in one place so that every task has an owner that cancels it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ingest.rtmp.server import RtmpServer
from ingest.rtp.config import repair_bitrate
from ingest.rtp.errors import RtpError
from ingest.rtp.raw import RawRtpInput
from ingest.rtp.receiver import TrackReceiver
from ingest.rtp.sdp import SessionDescription, parse_sdp
from ingest.rtp.server import RtspServer
from mediacore.app.cluster import Conflict, Position
from mediacore.app.cluster_redis import ClusterNode
from mediacore.app.config import Config, ConfigError, check_open_publish, public_base_url
from mediacore.app.lifecycle import EndStream, StreamLifecycle
from mediacore.app.local_owners import SharedPublishKeys
from mediacore.app.metrics import Metrics, ScrapeSources
from mediacore.app.plugins import Machine, PluginHost
from mediacore.app.publish_auth import PublishPolicy, Refusal
from mediacore.app.publish_hook import PublishHook
from mediacore.app.supervision import RestartBudget
from mediacore.app.worker import HOME_WORKER, LOOPBACK, WorkerLink, WorkerRole
from mediacore.hub.hub import Hub, Stream
from mediacore.hub.publisher import PublishAttempt
from mediacore.model.media import Kind
from mediacore.origin.admin import AdminState, create_admin_app
from mediacore.origin.app import create_app
from mediacore.origin.listener import Listener, ListenerLimits
from mediacore.origin.state import OriginState
from mediacore.origin.thumbnails import Thumbnails
from mediacore.origin.viewers import ViewerTracker
from mediacore.packager.hls import HlsPackager
from mediacore.packager.llhls import LlHlsPackager
from mediacore.packager.parts import declared_part_target
from mediacore.playlist.uris import LL_RENDITIONS
from mediacore.plugins.api import Plugin
from mediacore.store.hls import HlsStore
from mediacore.store.ll import LlRendition

log = logging.getLogger("mediacore")

VIEWER_SWEEPS_PER_TIMEOUT = 3
"""Silent viewers are expired this often per [http] viewer_timeout: a leave is heard at most
a third of the timeout late."""

HLS = "hls"
LLHLS = "llhls"
"""The outputs a stream's packagers write: the label of mediacore_packager_errors_total."""

HLS_POSITION = "hls"
LL_POSITIONS = {Kind.VIDEO: "ll-video", Kind.AUDIO: "ll-audio"}
"""The names of a stream's playlists in its cluster position record."""


class Engine:
    def __init__(
        self,
        config: Config,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        worker: WorkerRole | None = None,
    ) -> None:
        """`clock` (monotonic seconds) and `wall_clock` (seconds since the epoch) are the
        only clocks the engine's parts read. `worker`: this engine is one worker of
        `mediacore serve --workers N` (docs/architecture.md, "Workers")."""
        self.config = config
        self.worker: WorkerLink | None = None
        if worker is not None:
            self.worker = WorkerLink(
                worker, self._adopt, lambda: list(self.hub.streams), self._worker_conflict, self._parent_gone, clock
            )
            if LOOPBACK not in config.http.trusted_proxies:  # the proxy hop names the viewer
                config.http.trusted_proxies.append(LOOPBACK)
        self.hub = Hub(config.hub, wall_clock, clock)
        self.metrics = Metrics()
        self.stores: dict[str, HlsStore] = {}
        self.ll_renditions: dict[str, dict[Kind, LlRendition]] = {}
        self.viewers = ViewerTracker(config.http.viewer_timeout)
        self.failed: dict[str, str] = {}
        """Streams whose packager failed past [hls] max_packager_restarts, with the reason."""
        self.restarts = RestartBudget(config.hls.max_packager_restarts, config.hls.packager_restart_window)
        self.draining = False
        self.thumbnail_executor = ThreadPoolExecutor(1, thread_name_prefix="thumb")
        """Decodes thumbnails, one at a time (its thread starts with the first thumbnail asked for)."""
        self.thumbnails = Thumbnails(
            self.hub.streams,
            config.http.thumbnail_interval,
            config.http.thumbnail_width,
            self.thumbnail_executor,
            clock,
        )
        self.origin = OriginState(
            config.http,
            config.llhls.blocking_timeout_factor,
            self.hub.streams,
            self.stores,
            self.ll_renditions,
            self.viewers,
            self.metrics,
            self.base_url,
            clock,
            wall_clock,
            config.auth.playback_policy(),
            self.failed,
            thumbnails=self.thumbnails,
        )
        self.packagers: dict[str, HlsPackager] = {}
        self.ll_packagers: dict[str, LlHlsPackager] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.clock = clock
        self.lifecycle = StreamLifecycle(config.hls.end_grace, config.hls.ended_retention)
        self._lifecycle_timer: asyncio.TimerHandle | None = None
        self.mux_thread = ThreadPoolExecutor(1, thread_name_prefix="mux")
        """Muxes the segments too large to mux on the loop (MUX_ON_LOOP_BYTES); its thread
        starts with the first such segment."""
        self.publish_policy = PublishPolicy(
            config.auth, SharedPublishKeys(worker.run_dir, config.auth.publish_keys) if worker is not None else None
        )
        auth = config.auth
        self.publish_hook = PublishHook(auth.publish_hook, auth.publish_hook_timeout) if auth.publish_hook else None
        self.rtmp = RtmpServer(
            self.hub,
            config.rtmp,
            self.authorize_publish,
            on_connection=self._rtmp_connected,
            on_disconnect=self.metrics.rtmp_active.dec,
            on_error=self.metrics.ingest_errors.labels("rtmp").inc,
            clock=clock,
            wall_clock=wall_clock,
        )
        self.rtsp = RtspServer(
            self.hub,
            config.rtsp,
            self.authorize_publish,
            on_error=self.metrics.ingest_errors.labels("rtsp").inc,
            clock=clock,
            wall_clock=wall_clock,
        )
        self.wall_clock = wall_clock
        self.hub.on_stream_started.append(self._stream_started)
        self.hub.on_stream_unpublished.append(self._stream_unpublished)
        self.plugin_host = PluginHost(config, self.hub, self.metrics.registry, clock, wall_clock)
        self.origin.page_scripts = self.plugin_host.page_scripts
        self.plugins: list[Plugin] | None = None
        """Plugin instances to run instead of `[plugins] enabled` (set before start(); tests)."""
        if self.worker is not None:
            self.plugin_host.hooks.machine = Machine(
                self.worker.elsewhere, self.worker.role.index == HOME_WORKER, self.worker.relay_viewer
            )
            self.worker.on_viewer = self.plugin_host.hooks.relayed
        self.viewers.on_join.append(self.plugin_host.hooks.viewer_joined)
        self.viewers.on_leave.append(self.plugin_host.hooks.viewer_left)
        self._viewer_sweep: asyncio.TimerHandle | None = None
        self.metrics.attach(
            ScrapeSources(
                self.hub.streams,
                self._segments_made,
                self.viewers,
                self._rtp_receivers,
                clock,
                self.failed,
                self._media_held,
            )
        )
        self._http: Listener | None = None
        self._http_private: Listener | None = None
        """With workers: the same app on a loopback port of this worker alone (proxied requests)."""
        self._admin: Listener | None = None
        self.rtp_inputs: list[RawRtpInput] = []
        self.cluster: ClusterNode | None = None
        """The origin cluster's registry client ([cluster] redis_url), from start() on."""
        self._cluster_task: asyncio.Task[None] | None = None
        self._resume: dict[str, Position] = {}
        """Streams continuing where another node of the cluster left their playlists."""
        self.rtmp_port = 0
        self.rtsp_port = 0
        self.rtmps_port = 0  # 0 while [rtmp] tls_port is off
        self.rtsps_port = 0  # 0 while [rtsp] tls_port is off
        self._tls: ssl.SSLContext | None = None
        self.http_port = 0
        self.admin_port = 0

    def _segments_made(self, name: str) -> int:
        packager = self.packagers.get(name)
        return packager.segments_made if packager else 0

    def _media_held(self) -> Iterator[tuple[str, str, int]]:
        """(stream, output, bytes) of the media the playlists of each stream the hub knows
        hold in memory (a forgotten stream's series go with it, as its others do)."""
        for name in self.hub.streams:
            store = self.stores.get(name)
            if store is not None:
                yield name, HLS, store.held_bytes()
            for rendition in self.ll_renditions.get(name, {}).values():
                yield name, f"{LLHLS}-{rendition.name}", rendition.held_bytes()

    def _rtp_receivers(self) -> Iterator[tuple[str, TrackReceiver]]:
        """(stream, receiver) for every RTP track: RTSP sessions and raw inputs."""
        yield from self.rtsp.track_receivers()
        for rtp_input in self.rtp_inputs:
            for receiver in rtp_input.receivers.values():
                yield rtp_input.name, receiver

    def _rtmp_connected(self) -> None:
        self.metrics.rtmp_connections.inc()
        self.metrics.rtmp_active.inc()

    # Publish authorization -------------------------------------------------------------

    async def authorize_publish(self, attempt: PublishAttempt) -> str | None:
        """The Authorizer of both ingest servers: the local policy (rate limit, keys, resume),
        then the publish hook if one is configured. None allows; else the refusal's text."""
        if self.draining:
            return "the server is shutting down"  # a publish that slips in before the listeners close
        stream = self.hub.get(attempt.stream)
        reconnecting = stream is not None and not stream.publishing and not stream.ended
        previous = stream.attempt if stream is not None and reconnecting else None
        refusal = self.publish_policy.check(attempt, previous, self.clock())
        if refusal is None and self.publish_hook is not None:
            answer = await self.publish_hook.ask(attempt)
            if answer.status and not answer.allowed:
                hook_refusal = Refusal("hook", f"refused by the publish hook (HTTP {answer.status})")
                refusal = self.publish_policy.failed(attempt, hook_refusal, self.clock())
            elif not answer.allowed:
                refusal = Refusal("hook_error", "the publish hook did not answer; try again later")
        if refusal is None and self.worker is not None:
            holder = self.worker.claim(attempt.stream)
            if holder is not None:
                self.worker.refused(attempt.remote, holder)
                refusal = Refusal(
                    "worker", f"stream {attempt.stream} is being published on worker {holder} of this server"
                )
        if refusal is None and self.config.cluster.redis_url:
            refusal = await self._claim(attempt.stream)
        if refusal is None:
            return None
        self.metrics.publish_refused.labels(refusal.reason).inc()
        return refusal.message

    async def _claim(self, name: str) -> Refusal | None:
        """The cluster keeps one owner per name: claim `name` for this node in the registry,
        refused while another node holds it (until that node forgets it or its registration
        expires, [cluster] ttl after it died)."""
        if self.cluster is None:
            return Refusal("cluster", "the server is starting; try again")
        owner = await self.cluster.claim(name)
        if owner is None:
            return None
        return Refusal("cluster", f"stream {name} is being published on another node of the cluster ({owner})")

    def _cluster_conflict(self, conflict: Conflict) -> None:
        """Another node holds a name this node serves (both took it while Redis was out of
        reach): stop the publisher here and end the stream, so one owner is left."""
        self.end_stream(conflict.name, f"stream {conflict.name} is owned by {conflict.owner} in the cluster")

    def _worker_conflict(self, conflict: Conflict) -> None:
        """Another worker holds a name this one serves: end it here, so one owner is left."""
        self.end_stream(conflict.name, f"stream {conflict.name} is owned by worker {conflict.owner}")

    def _parent_gone(self) -> None:
        """The parent of this worker died: drain and exit as on SIGTERM."""
        os.kill(os.getpid(), signal.SIGTERM)

    async def _adopt(self, kind: str, sock: socket.socket) -> None:
        """A publisher's connection the parent accepted on listener `kind`."""
        tls = self._tls if kind in ("rtmps", "rtsps") else None
        if kind.startswith("rtmp"):
            await self.rtmp.adopt(sock, tls)
        else:
            await self.rtsp.adopt(sock, tls)

    def node_url(self) -> str:
        """This node's base URL for the cluster: [cluster] node_url, else from [server] host and
        the HTTP port (the machine's host name for a wildcard address)."""
        if self.config.cluster.node_url:
            return self.config.cluster.node_url.rstrip("/")
        host = self.config.server.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.http_port}"

    def _positions(self) -> dict[str, Position]:
        """Where each stream's playlists stand, for the cluster registry."""
        positions = {}
        for name in self.hub.streams:
            outputs = []
            store = self.stores.get(name)
            if store is not None:
                outputs.append((HLS_POSITION, store.next_msn, store.discontinuity_sequence))
            for kind, rendition in self.ll_renditions.get(name, {}).items():
                outputs.append((LL_POSITIONS[kind], rendition.next_msn, rendition.discontinuity_sequence))
            if outputs:
                positions[name] = Position(tuple(outputs))
        return positions

    def _resumed(self, name: str, output: str) -> tuple[int, int]:
        """(media sequence, discontinuity sequence) a new playlist of `name` starts at: where
        another node of the cluster left it, else 0, 0."""
        position = self._resume.get(name)
        resumed = position.resumed(output) if position is not None else None
        return resumed if resumed is not None else (0, 0)

    async def start_cluster(self) -> None:
        """Join the origin cluster ([cluster] redis_url): renew this node's registrations from
        now on and let the origin redirect requests for other nodes' streams."""
        node_url = self.node_url()
        self.cluster = ClusterNode(
            self.config.cluster,
            node_url,
            lambda: list(self.hub.streams),
            self._cluster_conflict,
            self._positions,
            self.clock,
        )
        self.origin.locate = self.cluster.locate
        await self.cluster.renew_once()
        self._cluster_task = asyncio.get_running_loop().create_task(self.cluster.run(), name="cluster")
        log.info("cluster: this node is %s in the registry at %s", node_url, self.config.cluster.redis_url)

    async def recheck_publishers(self) -> None:
        """Ask the hook again about every live publisher it admitted; stop those it now
        refuses. A re-check that gets no answer keeps the publisher (logged by the hook)."""
        hook = self.publish_hook
        if hook is None:
            return
        live = [(s, s.attempt) for s in self.hub.streams.values() if s.publishing and s.attempt is not None]
        answers = await asyncio.gather(*(hook.ask(attempt) for _, attempt in live if attempt is not None))
        for (stream, attempt), answer in zip(live, answers, strict=True):
            if answer.allowed or not answer.status:
                continue
            if stream.publishing and stream.attempt is attempt:  # still the publisher that was asked about
                self.metrics.publish_refused.labels("revoked").inc()
                self.hub.kick(stream.name, f"the publish hook refused it on re-check (HTTP {answer.status})")

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.auth.publish_hook_recheck)
            try:
                await self.recheck_publishers()
            except Exception as e:  # one failed round must not end the re-checks
                log.error("publish re-check failed: %r", e, exc_info=e)

    # Stream lifecycle ------------------------------------------------------------------

    def _stream_started(self, stream: Stream) -> None:
        self.lifecycle.published(stream.name)
        self._schedule_lifecycle()
        self.failed.pop(stream.name, None)
        self.restarts.forget(stream.name)
        old = self.stores.get(stream.name)
        self._resume.pop(stream.name, None)
        position = self.cluster.resume_position(stream.name) if self.cluster is not None else None
        if old is None and position is not None:
            self._resume[stream.name] = position
            log.info("stream %s continues its playlists where the cluster last saw them", stream.name)
        msn, dseq = (old.next_msn, old.discontinuity_sequence + 1) if old else self._resumed(stream.name, HLS_POSITION)
        store = HlsStore(
            self.config.hls.window_segments,
            self.config.hls.segment_duration,
            media_sequence=msn,
            discontinuity_sequence=dseq,
        )
        self.stores[stream.name] = store
        self._run_hls(stream, store)
        self._start_llhls(stream)

    def _start_llhls(self, stream: Stream) -> None:
        ll = self.config.llhls
        old = self.ll_renditions.get(stream.name, {})
        part_target = declared_part_target(ll.part_duration)
        renditions = {}
        for kind, name, prefix in (
            (Kind.VIDEO, "video", LL_RENDITIONS["video"]),
            (Kind.AUDIO, "audio", LL_RENDITIONS["audio"]),
        ):
            previous = old.get(kind)
            msn, dseq = (
                (previous.next_msn, previous.discontinuity_sequence + 1)
                if previous
                else self._resumed(stream.name, LL_POSITIONS[kind])
            )
            renditions[kind] = LlRendition(
                name,
                prefix,
                ll.window_segments,
                part_target,
                self.config.hls.segment_duration,
                media_sequence=msn,
                discontinuity_sequence=dseq,
            )
        video, audio = renditions[Kind.VIDEO], renditions[Kind.AUDIO]
        video.peers, audio.peers = [audio], [video]
        audio.td_source = video
        self.ll_renditions[stream.name] = renditions
        self._run_llhls(stream, renditions)

    def _run_hls(self, stream: Stream, store: HlsStore, segments_made: int = 0) -> None:
        packager = HlsPackager(stream, store, self.config.hls, self.mux_thread, self.clock)
        packager.segments_made = segments_made  # a restart continues the counter
        self.packagers[stream.name] = packager
        self._spawn(
            packager.run(),
            f"hls-{stream.name}",
            lambda error: self._packager_failed(stream, HLS, packager, error),
        )

    def _run_llhls(self, stream: Stream, renditions: dict[Kind, LlRendition], restart: bool = False) -> None:
        packager = LlHlsPackager(
            stream, renditions, self.config.llhls, self.config.hls, self.clock, from_keyframe=restart
        )
        self.ll_packagers[stream.name] = packager
        self._spawn(
            packager.run(),
            f"llhls-{stream.name}",
            lambda error: self._packager_failed(stream, LLHLS, packager, error),
        )

    # Packager supervision --------------------------------------------------------------

    def _packager_failed(
        self, stream: Stream, output: str, packager: HlsPackager | LlHlsPackager, error: BaseException
    ) -> None:
        """A packager task raised (its traceback is logged): restart it on the same playlist
        after a discontinuity, or, past [hls] max_packager_restarts within
        packager_restart_window, mark the stream failed. Never left frozen while live."""
        self.metrics.packager_errors.labels(output).inc()
        name = stream.name
        current = self.packagers.get(name) if output == HLS else self.ll_packagers.get(name)
        if current is not packager or self.hub.get(name) is not stream:
            return  # the stream was forgotten or started afresh meanwhile: nothing of it to restart
        now = self.clock()
        if stream.ended or self.draining or name in self.failed:
            # Nothing more will come for this output (its StreamEnded may be what it failed on).
            self._end_output(name, output, now)
            return
        hls = self.config.hls
        if not self.restarts.allow(name, output, now):
            self._fail(
                stream,
                output,
                f"the {output} packager failed {hls.max_packager_restarts + 1} times within "
                f"{hls.packager_restart_window:g} s; last error: {error!r}",
            )
            return
        log.warning(
            "stream %s: %s packager restarted after an error (%d of %d restarts within %g s); the playlist goes"
            " on after EXT-X-DISCONTINUITY from the next keyframe",
            name,
            output,
            self.restarts.restarts(name, output),
            hls.max_packager_restarts,
            hls.packager_restart_window,
        )
        if output == HLS:
            store = self.stores[name]
            store.break_timeline()
            self._run_hls(stream, store, packager.segments_made if isinstance(packager, HlsPackager) else 0)
        else:
            renditions = self.ll_renditions[name]
            for rendition in renditions.values():
                rendition.break_timeline(now)
            self._run_llhls(stream, renditions, restart=True)

    def _end_output(self, name: str, output: str, now: float) -> None:
        """EXT-X-ENDLIST on an output whose packager is gone."""
        if output == HLS:
            store = self.stores.get(name)
            if store is not None:
                store.end()
        else:
            for rendition in self.ll_renditions.get(name, {}).values():
                rendition.end(now)

    def _fail(self, stream: Stream, output: str, reason: str) -> None:
        """The stream is failed: "failed" in the API and /healthz, every playlist ends, the
        publisher is disconnected (so the encoder sees it), and the name is forgotten after
        [hls] ended_retention like any ended stream. A publish after that starts afresh."""
        name = stream.name
        now = self.clock()
        self.failed[name] = reason
        log.error("stream %s: failed: %s; playlists ended, publisher disconnected", name, reason)
        self._end_output(name, output, now)  # its packager is gone; the other one ends below
        self.hub.kick(name, f"stream failed: {reason}")
        if not stream.ended:
            stream.end()  # the packager still running writes what it holds, then ENDLIST
        self.lifecycle.ended(name, now)
        self._schedule_lifecycle()

    def _stream_unpublished(self, stream: Stream) -> None:
        if stream.ended:
            # Ended already (failed, or draining): nothing to wait for; forget it in due time.
            self.lifecycle.ended(stream.name, self.clock())
        else:
            self.lifecycle.unpublished(stream.name, stream.epoch, self.clock())
        self._schedule_lifecycle()

    def _schedule_lifecycle(self) -> None:
        """One timer, at the lifecycle's next deadline (none while draining: every stream is
        ended and stays served until the process exits)."""
        if self._lifecycle_timer is not None:
            self._lifecycle_timer.cancel()
            self._lifecycle_timer = None
        if self.draining:
            return
        deadline = self.lifecycle.next_deadline()
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._lifecycle_timer = loop.call_later(max(0.0, deadline - self.clock()), self.run_lifecycle)

    def end_stream(self, name: str, reason: str) -> bool:
        """End `name` now, as the lifecycle would after end_grace: stop its publisher (if
        any), EXT-X-ENDLIST, forget it after ended_retention; a later publish starts afresh.
        False if there is no such stream, it has ended already or its publisher cannot be
        stopped."""
        stream = self.hub.get(name)
        if stream is None or stream.ended:
            return False
        if stream.publishing:
            self.hub.kick(name, reason)
            if stream.publishing:  # nothing stopped it (a raw RTP input)
                return False
        stream.end()
        self.lifecycle.ended(name, self.clock())
        self._schedule_lifecycle()
        log.info("stream %s: ended (%s)", name, reason)
        return True

    def run_lifecycle(self) -> None:
        """Apply what the lifecycle says is due now (the timer calls this; so may a test)."""
        now = self.clock()
        for action in self.lifecycle.due(now):
            stream = self.hub.get(action.name)
            if isinstance(action, EndStream):
                if stream is not None and not stream.publishing and stream.epoch == action.epoch and not stream.ended:
                    stream.end()
                    self.lifecycle.ended(action.name, now)
            elif stream is not None and stream.ended and not stream.publishing:
                self.hub.remove(action.name)
                self.stores.pop(action.name, None)
                self.packagers.pop(action.name, None)
                self.ll_renditions.pop(action.name, None)
                self.ll_packagers.pop(action.name, None)
                self.viewers.forget(action.name)
                self.thumbnails.forget(action.name)
                self.failed.pop(action.name, None)
                self.restarts.forget(action.name)
                log.info("stream %s: forgotten after retention", action.name)
        self._schedule_lifecycle()

    def _spawn(
        self,
        coro: Coroutine[object, object, None],
        name: str,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            error = t.exception()
            if error is not None:
                log.error("task %s failed", t.get_name(), exc_info=error)
                if on_error is not None:
                    on_error(error)

        task.add_done_callback(done)

    # Start / stop ----------------------------------------------------------------------

    async def start(self) -> None:
        srv = self.config.server
        check_open_publish(self.config)
        tls = self._tls = self._tls_context()
        if self.worker is not None:  # the parent listens and hands connections over
            self.rtmp_port, self.rtsp_port = srv.rtmp_port, srv.rtsp_port
            self.rtmps_port, self.rtsps_port = self.config.rtmp.tls_port, self.config.rtsp.tls_port
            self.rtsp.host = srv.host
        else:
            await self._listen_ingest(tls)
        home = self.worker is None or self.worker.role.index == HOME_WORKER
        for item in self.config.rtp.inputs if home else ():  # UDP ports: one worker binds them
            try:
                sdp = parse_sdp(Path(item.sdp).read_text())
            except (OSError, RtpError) as e:
                raise ConfigError(f"rtp input {item.stream}: {item.sdp}: {e}") from e
            await self.add_rtp_input(item.stream, sdp, repair_bitrate(item.video_repair, item.video_repair_bitrate))
        await self.plugin_host.start(self.plugins)
        self._sweep_viewers()
        await self.start_http()
        await self.start_admin()
        if self.config.cluster.redis_url:
            await self.start_cluster()
        if self.publish_hook is not None:
            self._spawn(self._recheck_loop(), "publish-recheck")
        if self.worker is not None:
            assert self._http_private is not None
            self.worker.start(self._http_private.port, self.admin_port)
            self.origin.workers = self.worker.http
        log.info(
            "RTMP ingest on %s:%d, RTSP on %s:%d, HTTP on %s:%d, admin on %s:%d",
            srv.host,
            self.rtmp_port,
            srv.host,
            self.rtsp_port,
            srv.host,
            self.http_port,
            self.config.admin.host,
            self.admin_port,
        )

    async def _listen_ingest(self, tls: ssl.SSLContext | None) -> None:
        srv = self.config.server
        self.rtmp_port = await self.rtmp.start(srv.host, srv.rtmp_port)
        self.rtsp_port = await self.rtsp.start(srv.host, srv.rtsp_port)
        if tls is not None and self.config.rtmp.tls_port:
            self.rtmps_port = await self.rtmp.start(srv.host, self.config.rtmp.tls_port, tls)
            log.info("RTMPS ingest on %s:%d", srv.host, self.rtmps_port)
        if tls is not None and self.config.rtsp.tls_port:
            self.rtsps_port = await self.rtsp.start(srv.host, self.config.rtsp.tls_port, tls)
            log.info("RTSPS ingest on %s:%d", srv.host, self.rtsps_port)

    def _tls_context(self) -> ssl.SSLContext | None:
        """The server side of RTMPS and RTSPS, from [server] tls_cert and tls_key; None when
        neither TLS port is on."""
        if not (self.config.rtmp.tls_port or self.config.rtsp.tls_port):
            return None
        srv = self.config.server
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(srv.tls_cert, srv.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"server.tls_cert / server.tls_key: {e}") from e
        return context

    def _sweep_viewers(self) -> None:
        """Expire silent viewers a few times per viewer_timeout, so plugins hear them leave."""
        self.viewers.sweep(self.clock())
        interval = self.config.http.viewer_timeout / VIEWER_SWEEPS_PER_TIMEOUT
        self._viewer_sweep = asyncio.get_running_loop().call_later(interval, self._sweep_viewers)

    async def add_rtp_input(self, name: str, sdp: SessionDescription, repair_bitrate: int | None = None) -> RawRtpInput:
        """Listen for raw RTP described by `sdp`, published as stream `name`; its H.264 video
        repaired at `repair_bitrate` (ingest/rtp/repair.py; None: as sent)."""
        rtp_input = RawRtpInput(
            self.hub,
            name,
            sdp,
            self.config.server.host,
            self.config.rtp.input_timeout,
            on_error=self.metrics.ingest_errors.labels("rtp").inc,
            clock=self.clock,
            wall_clock=self.wall_clock,
            repair_bitrate=repair_bitrate,
        )
        await rtp_input.start()
        self.rtp_inputs.append(rtp_input)
        return rtp_input

    def _publish_keys(self) -> MutableMapping[str, str]:
        return self.publish_policy.keys

    def _refused(self, reason: str) -> None:
        self.metrics.http_refused.labels(reason).inc()

    async def start_http(self) -> None:
        """Start (or restart, on the same port) the HTTP origin; ingest is unaffected."""
        srv, http = self.config.server, self.config.http
        limits = ListenerLimits(
            http.header_timeout, http.keepalive_timeout, http.max_connections_per_ip, http.max_connections
        )
        app = create_app(self.origin, self.plugin_host.routes, self.plugin_host.machine_routes)
        listener = Listener(app, "http", limits, http.trusted_proxies, self._refused)
        self.http_port = await listener.start(
            srv.host, self.http_port or srv.http_port, reuse_port=self.worker is not None
        )
        self._http = listener
        if self.worker is not None and self._http_private is None:
            # Requests other workers forward: all from loopback, so no per-address cap.
            private = ListenerLimits(http.header_timeout, http.keepalive_timeout)
            app = create_app(self.origin, self.plugin_host.routes, self.plugin_host.machine_routes)
            self._http_private = Listener(app, "http-private", private)
            await self._http_private.start(LOOPBACK, 0)

    async def stop_http(self) -> None:
        """Stop serving HTTP (maintenance, failover drills) while ingest and packaging go on
        (the admin listener stays up)."""
        if self._http is not None:
            await self._http.stop()
            self._http = None

    async def start_admin(self) -> None:
        """The admin listener ([admin]): metrics, health, the stream list and the operator's
        mutations, on its own (loopback by default) address."""
        admin, http = self.config.admin, self.config.http
        state = AdminState(
            admin, self.origin, self.hub, self._publish_keys, self.end_stream, self.metrics.admin_requests
        )
        host, port = admin.host, admin.port
        if self.worker is not None:
            state.workers = self.worker.admin
            if self.worker.role.index != HOME_WORKER:  # [admin] port is the home worker's
                host, port = LOOPBACK, 0
        limits = ListenerLimits(http.header_timeout, http.keepalive_timeout)
        listener = Listener(create_admin_app(state), "admin", limits, on_refused=self._refused)
        self.admin_port = await listener.start(host, self.admin_port or port)
        self._admin = listener

    async def drain(self) -> None:
        """Shut down gracefully (the CLI's first SIGTERM or SIGINT), within [server]
        drain_timeout: refuse and close ingest (the listeners, every publishing session, so
        encoders see the disconnect), end every stream so its packagers write their open
        segments and parts and put EXT-X-ENDLIST on every playlist (blocked LL-HLS requests
        wake with it), then keep serving HTTP for drain_grace so players fetch the final
        segment. `stop()` follows."""
        srv = self.config.server
        loop = asyncio.get_running_loop()
        deadline = loop.time() + srv.drain_timeout
        self.draining = self.origin.draining = True
        self._schedule_lifecycle()  # cancels the timer: nothing is forgotten while draining
        streams = [s for s in self.hub.streams.values() if not s.ended]
        log.info(
            "draining: closing ingest, ending %d stream(s); HTTP served for up to %g s", len(streams), srv.drain_timeout
        )
        for stream in list(self.hub.streams.values()):
            self.hub.kick(stream.name, "the server is shutting down")
        await self.rtmp.stop()
        await self.rtsp.stop()
        for rtp_input in self.rtp_inputs:
            await rtp_input.stop()
        for stream in list(self.hub.streams.values()):
            if not stream.ended:
                stream.end()  # the packagers write what they hold, then EXT-X-ENDLIST
        late: set[asyncio.Task[None]] = set()
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - loop.time()))
        grace = min(srv.drain_grace, max(0.0, deadline - loop.time()))
        if late:
            log.warning(
                "draining: %d packager(s) did not finish within %g s (%s); serving HTTP %g s more",
                len(late),
                srv.drain_timeout,
                ", ".join(sorted(t.get_name() for t in late)),
                grace,
            )
        else:
            log.info("drained: every playlist has ended; serving HTTP %g s more", grace)
        await asyncio.sleep(grace)

    async def stop(self) -> None:
        await self.rtmp.stop()
        await self.rtsp.stop()
        for rtp_input in self.rtp_inputs:
            await rtp_input.stop()
        if self._lifecycle_timer is not None:
            self._lifecycle_timer.cancel()
            self._lifecycle_timer = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.stop_http()
        if self._http_private is not None:  # other workers' requests, until this worker stops
            await self._http_private.stop()
            self._http_private = None
        if self._cluster_task is not None:
            self._cluster_task.cancel()
            await asyncio.gather(self._cluster_task, return_exceptions=True)
            self._cluster_task = None
        if self.cluster is not None:
            await self.cluster.close(release=True)
            self.cluster = None
            self.origin.locate = None
        if self.worker is not None:
            await self.worker.stop()
            self.origin.workers = None
        if self._viewer_sweep is not None:
            self._viewer_sweep.cancel()
            self._viewer_sweep = None
        await self.plugin_host.stop()
        if self._admin is not None:
            await self._admin.stop()
            self._admin = None
        if self.publish_hook is not None:
            await self.publish_hook.close()
        self.mux_thread.shutdown(wait=False, cancel_futures=True)
        self.thumbnails.close()
        self.thumbnail_executor.shutdown(wait=False, cancel_futures=True)

    def base_url(self) -> str:
        return public_base_url(self.config.server, self.http_port)
