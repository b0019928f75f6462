"""Timed metadata end to end: an encoder's onCuePoint over RTMP pins a card at its frame
(DATERANGE START-DATE, the ID3 packet in the TS segment and the emsg in the fMP4 part all at
that frame's time), and cards pinned through the hub while ffmpeg publishes are served in
all three playlists, the same through reloads and delta updates."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess

import aiohttp
import av
from conftest import ffmpeg_push_cmd, require_tool, start_process, stop_process, until, wait_for_playlist

from benchmarks.hostile_peers import ScriptedPublisher
from ingest.rtmp import amf0, flv
from ingest.rtmp.chunk import AUDIO, DATA_AMF0, VIDEO
from mediacore.model.media import Kind
from mediacore.playlist.daterange import DateRange
from mediacore.playlist.media import MediaPlaylist


def dateranges_in(text: str) -> list[DateRange]:
    return [DateRange.parse(ln) for ln in text.splitlines() if ln.startswith("#EXT-X-DATERANGE:")]


def clip_messages(clip) -> list[tuple[int, int, bytes]]:
    """(type, ms timestamp, FLV payload) of the clip, sequence headers first."""
    container = av.open(str(clip))
    vs, as_ = container.streams.video[0], container.streams.audio[0]
    out = [
        (VIDEO, 0, flv.video_payload(True, flv.AVC_SEQUENCE_HEADER, 0, bytes(vs.codec_context.extradata))),
        (AUDIO, 0, flv.audio_payload(0, bytes(as_.codec_context.extradata))),
    ]
    for packet in container.demux():
        if packet.size == 0:
            continue
        if packet.stream.type == "video":
            cts = packet.pts - packet.dts
            out.append((VIDEO, packet.dts, flv.video_payload(packet.is_keyframe, flv.AVC_NALU, cts, bytes(packet))))
        else:
            out.append((AUDIO, packet.pts, flv.audio_payload(1, bytes(packet))))
    container.close()
    return out


def probe_packets(path) -> list[dict]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_packets", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info = json.loads(out)
    kinds = {s["index"]: (s["codec_type"], s["codec_name"]) for s in info["streams"]}
    return [dict(p, kind=kinds[p["stream_index"]]) for p in info["packets"]]


def emsg_times(data: bytes) -> list[tuple[int, int, str]]:
    """(timescale, presentation_time, scheme) of the top-level emsg boxes of a part."""
    found = []
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"emsg":
            assert data[pos + 8] == 1, "emsg version 1"
            timescale, presentation = struct.unpack(">IQ", data[pos + 12 : pos + 24])
            scheme = data[pos + 32 : data.index(b"\x00", pos + 32)].decode()
            found.append((timescale, presentation, scheme))
        pos += size
    return found


async def test_rtmp_cue_point_pins_the_card_at_its_frame(engine, clip, tmp_path):
    require_tool("ffprobe")
    messages = clip_messages(clip)
    video = [(ts, payload) for kind, ts, payload in messages[2:] if kind == VIDEO]
    # The cue point names the presentation time of the 100th video frame (after the first GOP).
    frame_ts, frame_payload = video[100]
    cue_ms = frame_ts + int.from_bytes(frame_payload[2:5], "big")
    publisher = ScriptedPublisher("127.0.0.1", engine.rtmp_port)
    await publisher.connect()
    status = await publisher.publish("cue")
    assert "NetStream.Publish.Start" in json.dumps(status, default=str)
    cue = amf0.encode(
        "onCuePoint",
        {"name": "product", "time": cue_ms / 1000, "type": "event", "parameters": {"product_id": "sku-42"}},
    )
    video_seen = 0
    for kind, ts, payload in messages:
        if kind == VIDEO and ts == frame_ts and payload is frame_payload:
            publisher.send(publisher.chunks.write(4, DATA_AMF0, 1, cue_ms, cue))
        publisher.send(publisher.chunks.write(6 if kind == VIDEO else 5, kind, 1, ts, payload))
        video_seen += kind == VIDEO
        if video_seen % 30 == 0:
            await publisher.writer.drain()
    await publisher.writer.drain()
    store = await _wait_for_store(engine, "cue")
    await until(lambda: any(seg.dateranges for seg in store.segments), 20, "the card's segment")
    seg = next(s for s in store.segments if s.dateranges)
    (card,) = seg.dateranges
    assert card.attributes == (("X-PRODUCT-ID", "sku-42"),) and card.cls == "com.mediacore.product"
    path = tmp_path / "cue.ts"
    path.write_bytes(seg.data)
    packets = probe_packets(path)
    first_video = next(p for p in packets if p["kind"][0] == "video")
    # START-DATE is that frame's PDT: the segment's PDT plus the frame's distance from its start.
    expected = seg.program_date_time + (cue_ms * 90 - int(first_video["pts"])) / 90000
    assert abs(card.start_date - expected) <= 0.001
    id3 = [p for p in packets if p["kind"] == ("data", "timed_id3")]
    assert [int(p["pts"]) for p in id3] == [cue_ms * 90]
    assert any(int(p["pts"]) == cue_ms * 90 for p in packets if p["kind"][0] == "video")  # that frame
    # LL-HLS: the DATERANGE with the same ID and START-DATE, and the emsg in the part.
    rendition = engine.ll_renditions["cue"][Kind.VIDEO]
    await until(lambda: card.id in rendition.render(), 10, "the card in the LL-HLS playlist")
    (ll_card,) = dateranges_in(rendition.render())
    assert ll_card.render() == card.render()  # same ID, START-DATE and attributes
    parents = [s for s in [*rendition.segments, rendition.current] if s is not None]
    boxes = [t for s in parents for p in s.parts for t in emsg_times(bytes(p.data))]
    assert boxes == [(90000, cue_ms * 90, "https://aomedia.org/emsg/ID3")]
    await publisher.close()


async def _wait_for_store(engine, name: str):
    await until(lambda: name in engine.stores and engine.stores[name].ready, 20, f"stream {name}")
    return engine.stores[name]


async def test_cards_pinned_while_ffmpeg_publishes_are_in_all_three_playlists(engine, clip):
    require_tool("ffmpeg")
    proc = await start_process(*ffmpeg_push_cmd(clip, f"rtmp://127.0.0.1:{engine.rtmp_port}/live/shop", loop=True))
    base = f"http://127.0.0.1:{engine.http_port}/live/shop/"
    try:
        await wait_for_playlist(engine.http_port, "shop", segments=1)
        stream = engine.hub.get("shop")
        pinned = []
        for i in range(20):  # 20 cards at 10/s, one with 8 KB of attributes
            extra = {"X-DATA": "d" * 8192} if i == 3 else {}
            pinned.append(stream.add_metadata({"X-PRODUCT-ID": f"sku-{i}", "X-PRICE": 10 + i, **extra}, duration=30))
            await asyncio.sleep(0.1)
        want = {item.id: item.start_date for item in pinned}
        urls = {"hls": "index.m3u8", "video": "ll/video.m3u8", "audio": "ll/audio.m3u8"}
        async with aiohttp.ClientSession() as http:

            async def fetch(path: str) -> str:
                async with http.get(base + path) as resp:
                    assert resp.status == 200, (path, resp.status)
                    return await resp.text()

            async def listed() -> dict[str, dict[str, DateRange]]:
                return {k: {dr.id: dr for dr in dateranges_in(await fetch(u))} for k, u in urls.items()}

            deadline = asyncio.get_running_loop().time() + 15
            while True:
                seen = await listed()
                if all(set(want) <= set(ids) for ids in seen.values()):
                    break
                assert asyncio.get_running_loop().time() < deadline, {k: len(v) for k, v in seen.items()}
                await asyncio.sleep(0.25)
            for ident, start in want.items():
                cards = [seen[k][ident] for k in urls]
                assert cards[0] == cards[1] == cards[2], ident  # same ID, START-DATE, attributes
                assert abs(cards[0].start_date - start) < 0.001
            # Unchanged across reloads and delta updates.
            for _ in range(3):
                await asyncio.sleep(0.5)
                again = await listed()
                for k in urls:
                    for ident in want:
                        if ident in again[k]:
                            assert again[k][ident] == seen[k][ident]
                for rendition in ("video", "audio"):
                    full = MediaPlaylist.parse(await fetch(f"ll/{rendition}.m3u8"))
                    yes = await fetch(f"ll/{rendition}.m3u8?_HLS_skip=YES")
                    v2 = await fetch(f"ll/{rendition}.m3u8?_HLS_skip=v2")
                    full_ids = [dr.id for s in full.segments for _, dr in s.dateranges]
                    assert set(want) <= {dr.id for dr in dateranges_in(yes)}
                    v2_ids = [dr.id for dr in dateranges_in(v2)]
                    assert len(v2_ids) == len(set(v2_ids)) and set(v2_ids) <= set(full_ids)
                    for dr in dateranges_in(v2):
                        assert dr == seen[rendition].get(dr.id, dr)
            hls_text = await fetch("index.m3u8")
            assert "#EXT-X-PROGRAM-DATE-TIME:" in hls_text  # D2
    finally:
        await stop_process(proc)
