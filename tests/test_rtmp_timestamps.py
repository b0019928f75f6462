"""Real H.264/AAC frames published with RTMP timestamps that cross 2^24 ms (extended
timestamps begin) and 2^32 ms (the 32-bit clock wraps): the HLS output has no
discontinuity and its segments keep their 2 s cadence."""

from __future__ import annotations

import asyncio

import av
import pytest

from benchmarks.hostile_peers import CompressingChunkWriter, ScriptedPublisher
from ingest.rtmp import amf0
from ingest.rtmp.chunk import AUDIO, COMMAND_AMF0, VIDEO
from ingest.rtmp.flv import AAC_RAW, AAC_SEQUENCE_HEADER, AVC_NALU, AVC_SEQUENCE_HEADER, audio_payload, video_payload
from mediacore.playlist.media import MediaPlaylist

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("start_ms", [2**24 - 3000, 2**32 - 3000], ids=["2^24", "2^32"])
async def test_clock_crossings_produce_no_discontinuity(engine, clip, start_ms):
    container = av.open(str(clip))
    vs, as_ = container.streams.video[0], container.streams.audio[0]
    packets = [p for p in container.demux() if p.size]
    client = ScriptedPublisher("127.0.0.1", engine.rtmp_port)
    await client.connect()
    status = await client.publish("wrap")
    assert status[3]["code"] == "NetStream.Publish.Start"
    client.set_chunk_size(4096)
    w = client.chunks = CompressingChunkWriter(client.chunks.chunk_size)
    ts0 = start_ms & 0xFFFFFFFF
    client.send(
        w.write(6, VIDEO, 1, ts0, video_payload(True, AVC_SEQUENCE_HEADER, 0, bytes(vs.codec_context.extradata)))
    )
    client.send(w.write(4, AUDIO, 1, ts0, audio_payload(AAC_SEQUENCE_HEADER, bytes(as_.codec_context.extradata))))
    for packet in packets:
        ts = (start_ms + int(packet.dts)) & 0xFFFFFFFF  # FLV timebase is 1 ms
        if packet.stream.type == "video":
            cts = int(packet.pts - packet.dts)
            client.send(w.write(6, VIDEO, 1, ts, video_payload(packet.is_keyframe, AVC_NALU, cts, bytes(packet))))
        else:
            client.send(w.write(4, AUDIO, 1, ts, audio_payload(AAC_RAW, bytes(packet))))
        await client.writer.drain()
    client.send(w.write(3, COMMAND_AMF0, 0, 0, amf0.encode("FCUnpublish", 5.0, None, "wrap")))
    await client.writer.drain()
    store = None
    for _ in range(100):
        store = engine.stores.get("wrap")
        if store is not None and len(store.segments) >= 5:
            break
        await asyncio.sleep(0.1)
    await client.close()
    assert store is not None
    pl = MediaPlaylist.parse(store.playlist_text())
    assert len(pl.segments) == 5, [s.duration for s in pl.segments]
    assert not any(s.discontinuity for s in pl.segments)
    assert [round(s.duration, 3) for s in pl.segments] == [2.0] * 5
    pdts = [s.program_date_time for s in pl.segments]
    assert all(abs(b - a - 2.0) < 0.01 for a, b in zip(pdts, pdts[1:]))
    frames = engine.hub.get("wrap").stats.frames
    assert sum(frames.values()) == len(packets)  # every frame crossed the wrap into the hub
