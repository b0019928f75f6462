"""Timed metadata without sockets: the DateRange tag, the stores' DATERANGE lists through
reloads and delta updates (K4, K5, K7), the hub's admission rules, the packagers at 50
items/s with an injected clock, ID3 and emsg bytes, and RTMP cue points."""

from __future__ import annotations

import asyncio
import struct
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.rtmp import amf0
from ingest.rtmp.chunk import DATA_AMF0, Message
from ingest.rtmp.session import CuePoint, ServerSession
from ingest.rtmp.to_stream import RtmpToFrames
from mediacore.hub.config import HubConfig
from mediacore.hub.hub import Hub
from mediacore.model.media import Frame, Kind, Track
from mediacore.model.metadata import MAX_ATTRIBUTE_BYTES, PRODUCT_CLASS, MetadataError, TimedMetadata
from mediacore.packager.config import HlsConfig, LlHlsConfig
from mediacore.packager.fmp4 import EMSG_ID3_SCHEME, emsg
from mediacore.packager.hls import HlsPackager
from mediacore.packager.llhls import LlHlsPackager
from mediacore.packager.metadata import id3_tag
from mediacore.packager.parts import declared_part_target
from mediacore.playlist.daterange import DateRange, DateRangeError
from mediacore.playlist.media import MediaPlaylist
from mediacore.playlist.tags import format_date_time
from mediacore.store.hls import HlsStore
from mediacore.store.ll import LlRendition

EPOCH = 1_764_460_800.0
VIDEO = Track(Kind.VIDEO, "h264", 90000, b"cfg")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# DateRange ------------------------------------------------------------------------------

_names = st.from_regex(r"X-[A-Z0-9][A-Z0-9\-]{0,12}", fullmatch=True)
_strings = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters='"'), max_size=40)
_values = st.one_of(
    _strings,
    st.integers(min_value=0, max_value=10**12),
    st.floats(min_value=0, max_value=1e18, allow_nan=False, allow_infinity=False),
)


@given(
    ident=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,30}", fullmatch=True),
    ms=st.integers(min_value=0, max_value=4_000_000_000_000),
    cls=st.one_of(st.none(), st.just(PRODUCT_CLASS)),
    duration_ms=st.one_of(st.none(), st.integers(min_value=0, max_value=86_400_000)),
    attributes=st.dictionaries(_names, _values, max_size=6),
)
def test_daterange_render_parse_round_trip(ident, ms, cls, duration_ms, attributes):
    dr = DateRange(
        ident, ms / 1000, cls, None if duration_ms is None else duration_ms / 1000, tuple(attributes.items())
    )
    line = dr.render()
    back = DateRange.parse(line)
    assert back.render() == line
    assert (back.id, back.cls, back.attributes) == (dr.id, dr.cls, dr.attributes)
    assert format_date_time(back.start_date) == format_date_time(dr.start_date)
    assert all(type(a[1]) is type(b[1]) for a, b in zip(back.attributes, dr.attributes))


def test_daterange_quoting_and_refusals():
    dr = DateRange("card-1", EPOCH + 1.5, PRODUCT_CLASS, 30.0, (("X-PRODUCT-ID", "sku,1"), ("X-PRICE", 19.9)))
    assert dr.render() == (
        '#EXT-X-DATERANGE:ID="card-1",CLASS="com.mediacore.product",START-DATE="2025-11-30T00:00:01.500Z",'
        'DURATION=30.000,X-PRODUCT-ID="sku,1",X-PRICE=19.9'
    )
    assert DateRange.parse(dr.render()) == dr
    with pytest.raises(DateRangeError, match="double quote"):
        DateRange("a", EPOCH, attributes=(("X-A", 'say "hi"'),)).render()
    with pytest.raises(DateRangeError, match="not allowed"):
        DateRange("a", EPOCH, attributes=(("x-lower", "v"),)).render()
    with pytest.raises(DateRangeError, match="at least 0"):
        DateRange("a", EPOCH, attributes=(("X-N", -1),)).render()
    with pytest.raises(DateRangeError, match="exceeds"):
        DateRange("a", EPOCH, attributes=(("X-BIG", "x" * 70_000),)).render()
    with pytest.raises(DateRangeError, match="twice"):
        DateRange.parse('ID="a",START-DATE="2025-11-30T00:00:00.000Z",ID="b"')
    with pytest.raises(DateRangeError, match="needs ID"):
        DateRange.parse('START-DATE="2025-11-30T00:00:00.000Z"')
    with pytest.raises(DateRangeError, match="decimal"):
        DateRange.parse('ID="a",START-DATE="2025-11-30T00:00:00.000Z",X-N=-3')


# Stores ---------------------------------------------------------------------------------


def dateranges_in(text: str) -> list[DateRange]:
    return [DateRange.parse(ln) for ln in text.splitlines() if ln.startswith("#EXT-X-DATERANGE:")]


def ll_with_card(parents: int, card_at: int = 1) -> tuple[LlRendition, DateRange, float]:
    """A video rendition (2 s parents of ten 0.2 s parts; the clock advances 0.2 s per
    part) with one card pinned to part 3 of parent `card_at`."""
    r = LlRendition("video", "v", 20, declared_part_target(0.2), 2.0)
    r.set_init(b"init")
    card = DateRange("card-1", EPOCH + card_at * 2 + 0.6, PRODUCT_CLASS, 10.0, (("X-PRODUCT-ID", "sku-1"),))
    now = 0.0
    for msn in range(parents):
        for i in range(10):
            now = msn * 2 + i * 0.2
            pinned = [card] if (msn, i) == (card_at, 3) else []
            r.add_part(b"p", 0.2, i == 0, i == 0, i == 9, EPOCH + now, now, 6, dateranges=pinned)
    return r, card, now


def test_ll_daterange_is_listed_before_its_part_and_kept_through_reloads_and_deltas():
    r, card, now = ll_with_card(parents=4)
    full = r.render(now=now)
    lines = full.splitlines()
    at = lines.index(card.render())
    assert lines[at + 1].startswith("#EXT-X-PART:") and "1.3" in lines[at + 1].split("URI=")[1]  # part 3 of MSN 1
    assert "CAN-SKIP-DATERANGES=YES" in full and "#EXT-X-PROGRAM-DATE-TIME:" in full  # C4, K8, D2
    # The text parses back to what the store built, and renders again unchanged.
    assert MediaPlaylist.parse(full).render() == full
    # More parents: the card stays listed, its line unchanged, while its parent is in the window.
    for msn in range(4, 12):
        for i in range(10):
            now = msn * 2 + i * 0.2
            r.add_part(b"p", 0.2, i == 0, i == 0, i == 9, EPOCH + now, now, 6)
        text = r.render(now=now)
        assert dateranges_in(text) == [card]
        assert dateranges_in(r.render("YES", now=now)) == [card]  # K4: a YES delta keeps every tag
        # Once its parent is beyond G1's part window, it moves before the parent's tags.
        pl = MediaPlaylist.parse(text)
        assert MediaPlaylist.parse(text).render() == text
        assert [s.msn for s in pl.segments if s.dateranges] == [1]
    delta_yes = r.render("YES", now=now)
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=" in delta_yes and "RECENTLY-REMOVED" not in delta_yes
    assert "#EXT-X-VERSION:9" in delta_yes
    # K5: a v2 delta leaves out the card (added more than CAN-SKIP-UNTIL = 12 s ago).
    delta_v2 = r.render("v2", now=now)
    assert "#EXT-X-VERSION:10" in delta_v2  # K7
    assert 'RECENTLY-REMOVED-DATERANGES=""' in delta_v2
    assert dateranges_in(delta_v2) == []


def test_ll_daterange_removed_with_its_parent_then_listed_as_recently_removed():
    r, card, now = ll_with_card(parents=2, card_at=1)
    added_at = 2 + 3 * 0.2
    msn = 2
    while "card-1" in r.render(now=now):
        for i in range(10):
            now = msn * 2 + i * 0.2
            r.add_part(b"p", 0.2, i == 0, i == 0, i == 9, EPOCH + now, now, 6)
        msn += 1
    removed_at = now
    assert r.media_sequence == 2  # gone with MSN 1, not before
    assert removed_at - added_at > r.skip_boundary()
    v2 = r.render("v2", now=now)
    assert 'RECENTLY-REMOVED-DATERANGES="card-1"' in v2
    assert dateranges_in(v2) == []
    # Later requests in the same state: still listed until the skip boundary has passed.
    assert 'RECENTLY-REMOVED-DATERANGES="card-1"' in r.render("v2", now=now + r.skip_boundary() - 0.1)
    assert 'RECENTLY-REMOVED-DATERANGES=""' in r.render("v2", now=now + r.skip_boundary() + 0.1)
    assert MediaPlaylist.parse(v2).recently_removed_dateranges == "card-1"


def test_v2_delta_keeps_recent_dateranges_and_merges_into_the_full_playlist():
    r = LlRendition("video", "v", 20, declared_part_target(0.2), 2.0)
    r.set_init(b"init")
    now = 0.0
    cards = []
    for msn in range(14):
        for i in range(10):
            now = msn * 2 + i * 0.2
            pinned = []
            if i == 5:
                cards.append(DateRange(f"card-{msn}", EPOCH + now, PRODUCT_CLASS))
                pinned = [cards[-1]]
            r.add_part(b"p", 0.2, i == 0, i == 0, i == 9, EPOCH + now, now, 6, dateranges=pinned)
    full = MediaPlaylist.parse(r.render(now=now))
    v2 = MediaPlaylist.parse(r.render("v2", now=now))
    kept = {dr.id for dr in dateranges_in(r.render("v2", now=now))}
    listed = [dr.id for s in full.segments for _, dr in s.dateranges]
    # Cards added within CAN-SKIP-UNTIL seconds stay, older ones are left out (K5).
    recent = {f"card-{m}" for m in range(14) if now - (m * 2 + 1.0) <= r.skip_boundary()}
    assert kept == recent & set(listed)
    # A client's merge (S6.3.7): the previous playlist's date ranges, minus the recently
    # removed, plus the delta's, equal the full playlist's.
    previous = set(listed)  # as a client that loaded the full playlist just before holds them
    removed = set(filter(None, (v2.recently_removed_dateranges or "").split("\t")))
    assert (previous - removed) | kept == set(listed)
    assert v2.skipped_segments > 0


def test_hls_store_lists_dateranges_before_their_segment_until_it_leaves():
    store = HlsStore(window_segments=6, segment_duration=2.0)
    card = DateRange("card-7", EPOCH + 2.5, PRODUCT_CLASS, None, (("X-PRODUCT-ID", "7"),))
    store.add_segment(2.0, b"ts", EPOCH, False, 0.0)
    cached = store.playlist_text()
    store.add_segment(2.0, b"ts", EPOCH + 2, False, 2.0, [card])
    text = store.playlist_text()
    assert text != cached  # the render cache was replaced
    lines = text.splitlines()
    at = lines.index(card.render())
    assert lines[at + 1] == "#EXT-X-PROGRAM-DATE-TIME:2025-11-30T00:00:02.000Z"
    assert MediaPlaylist.parse(text).render() == text
    i = 2
    while store.media_sequence < 2:
        assert dateranges_in(store.playlist_text()) == [card]
        store.add_segment(2.0, b"ts", EPOCH + 2 * i, False, 2.0 * i)
        i += 1
    assert dateranges_in(store.playlist_text()) == []


# Hub ------------------------------------------------------------------------------------


def vframe(i: int, key: bool | None = None) -> Frame:
    return Frame(VIDEO, i * 3000, i * 3000, (i % 60 == 0) if key is None else key, b"v" * 100, EPOCH + i / 30)


def test_add_metadata_now_is_the_newest_frame_and_is_never_dropped():
    clock = Clock()
    hub = Hub(clock=clock)
    pub = hub.publish("s")
    stream = hub.get("s")
    slow = stream.subscribe("slow", max_items=4)
    with pytest.raises(MetadataError, match="no media yet"):
        stream.add_metadata({"X-PRODUCT-ID": "1"})
    for i in range(10):
        pub.send(vframe(i))
    item = stream.add_metadata({"X-PRODUCT-ID": "1"}, duration=15)
    assert (item.id, item.cls, item.pts, item.start_date) == ("card-1", PRODUCT_CLASS, 9 * 3000, EPOCH + 9 / 30)
    later = stream.add_metadata({"X-PRODUCT-ID": "2"}, start=EPOCH + 1.0)
    assert later.pts == 9 * 3000 + round((1.0 - 9 / 30) * 90000) and later.id == "card-2"
    for i in range(10, 200):  # the slow subscriber drops frames, never the items
        pub.send(vframe(i))
    got = []
    while (x := slow.get_nowait()) is not None:
        got.append(x)
    assert [x for x in got if isinstance(x, TimedMetadata)] == [item, later]
    assert slow.dropped > 0


def test_bad_metadata_is_refused_with_a_clear_error_and_the_stream_goes_on():
    clock = Clock()
    hub = Hub(HubConfig(metadata_per_second=50), clock=clock)
    pub = hub.publish("s")
    stream = hub.get("s")
    sub = stream.subscribe("p")
    pub.send(vframe(0))
    cases = [
        ({"X-BIG": "x" * MAX_ATTRIBUTE_BYTES}, {}, "exceed"),
        ({"x-product": "1"}, {}, "must be 'X-'"),
        ({"PRODUCT": "1"}, {}, "must be 'X-'"),
        ({"X-Q": 'a "quote"'}, {}, "double quote"),
        ({"X-N": -1}, {}, "at least 0"),
        ({"X-N": float("nan")}, {}, "finite"),
        ({"X-B": True}, {}, "string or a number"),
        ({}, {"metadata_id": 'bad"id'}, "may hold only"),
        ({}, {"metadata_id": "x" * 129}, "1 to 128"),
        ({}, {"duration": -3}, "duration"),
        ({}, {"start": EPOCH + 3600}, "at most 60 s"),
        ({}, {"start": "later"}, "must be"),
    ]
    for attributes, kwargs, message in cases:
        with pytest.raises(MetadataError, match=message):
            stream.add_metadata(attributes, **kwargs)
    # 8 KB of attributes pass.
    big = stream.add_metadata({"X-PRODUCT-ID": "1", "X-DATA": "d" * 8192}, metadata_id="big")
    with pytest.raises(MetadataError, match="already used"):
        stream.add_metadata({}, metadata_id="big")
    for _ in range(49):
        stream.add_metadata({"X-PRODUCT-ID": "1"})
    with pytest.raises(MetadataError, match="at most 50 timed metadata items per second"):
        stream.add_metadata({"X-PRODUCT-ID": "1"})
    clock.now += 1.0
    stream.add_metadata({"X-PRODUCT-ID": "1"})
    pub.send(vframe(1))
    items = []
    while (x := sub.get_nowait()) is not None:
        items.append(x)
    assert [type(x).__name__ for x in items].count("TimedMetadata") == 51 and items[1] is big
    assert isinstance(items[-1], Frame) and items[-1].dts == 3000  # frames flow as before
    assert stream.publishing


def test_cue_point_metadata_is_rebased_like_the_frames_of_a_republish():
    hub = Hub(clock=Clock())
    pub = hub.publish("s")
    for i in range(30):
        pub.send(vframe(i))
    pub.close()
    pub = hub.publish("s")  # the encoder restarted its clock at 0
    stream = hub.get("s")
    sub = stream.subscribe("p")
    pub.send(vframe(0))
    first = sub.get_nowait()
    assert isinstance(first, Frame)
    cue = TimedMetadata("", PRODUCT_CLASS, EPOCH + 5, 3000 * 4, None, (("X-PRODUCT-ID", "9"),))
    item = pub.add_metadata(cue)
    assert item.pts == first.pts + 3000 * 4 and item.id == "card-1"


# Packagers at 50 items/s ----------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_frames(clip):
    import av

    container = av.open(str(clip))
    vs, as_ = container.streams.video[0], container.streams.audio[0]
    video = Track(Kind.VIDEO, "h264", 90000, bytes(vs.codec_context.extradata), "avc1.64001f", 1280, 720)
    audio = Track(
        Kind.AUDIO, "aac", 48000, bytes(as_.codec_context.extradata), "mp4a.40.2", sample_rate=48000, channels=2
    )
    frames = []
    for packet in container.demux():
        if packet.size == 0:
            continue
        if packet.stream.type == "video":
            pts = packet.pts * 90
            frames.append(Frame(video, packet.dts * 90, pts, packet.is_keyframe, bytes(packet), EPOCH + pts / 90000))
        else:
            pts = packet.pts * 48
            frames.append(Frame(audio, pts, pts, True, bytes(packet), EPOCH + pts / 48000))
    container.close()
    return video, audio, frames


async def test_fifty_items_per_second_for_ten_seconds_all_listed_once_in_all_three_playlists(clip_frames):
    video, audio, frames = clip_frames
    clock = Clock()
    hub = Hub(clock=clock)
    pub = hub.publish("shop")
    stream = hub.get("shop")
    pub.update_track(video)
    pub.update_track(audio)
    hls_config = HlsConfig(window_segments=8)
    store = HlsStore(8, 2.0)
    renditions = {
        Kind.VIDEO: LlRendition("video", "v", 20, declared_part_target(0.2), 2.0),
        Kind.AUDIO: LlRendition("audio", "a", 20, declared_part_target(0.2), 2.0),
    }
    renditions[Kind.VIDEO].peers = [renditions[Kind.AUDIO]]
    renditions[Kind.AUDIO].peers = [renditions[Kind.VIDEO]]
    renditions[Kind.AUDIO].td_source = renditions[Kind.VIDEO]
    with ThreadPoolExecutor(2) as executor:
        hls = HlsPackager(stream, store, hls_config, executor, clock)
        ll = LlHlsPackager(stream, renditions, LlHlsConfig(), hls_config, clock)
        tasks = [asyncio.create_task(hls.run()), asyncio.create_task(ll.run())]
        added: list[TimedMetadata] = []
        next_item = 0.0
        seen_full: dict[str, set[str]] = {"hls": set(), "video": set(), "audio": set()}
        for n, frame in enumerate(frames):
            pub.send(frame)
            t = frame.pts / frame.track.timebase
            clock.now = t
            while t >= next_item and t < 10.0:  # 50 per second of media, from the API
                added.append(stream.add_metadata({"X-PRODUCT-ID": str(len(added)), "X-PRICE": 9.5}))
                next_item += 0.02
            if n % 20 == 0:
                await asyncio.sleep(0)  # let the packagers run, as the loop would
                await asyncio.sleep(0.001)
                for name, text in (
                    ("hls", store.playlist_text() if store.ready else ""),
                    ("video", renditions[Kind.VIDEO].render(now=clock.now)),
                    ("audio", renditions[Kind.AUDIO].render(now=clock.now) if renditions[Kind.AUDIO].ready else ""),
                ):
                    ids = [dr.id for dr in dateranges_in(text)]
                    assert len(ids) == len(set(ids)), f"{name}: a DATERANGE listed twice"
                    seen_full[name].update(ids)
                video_r = renditions[Kind.VIDEO]
                full = [dr.id for dr in dateranges_in(video_r.render(now=clock.now))]
                assert [dr.id for dr in dateranges_in(video_r.render("YES", now=clock.now))] == full  # K4
                v2 = [dr.id for dr in dateranges_in(video_r.render("v2", now=clock.now))]
                assert len(v2) == len(set(v2)) and set(v2) <= set(full)
        hub.get("shop").end()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert len(added) >= 490
    want = {item.id: format_date_time(item.date) for item in added}
    for name, text in (
        ("hls", store.playlist_text()),
        ("video", renditions[Kind.VIDEO].render()),
        ("audio", renditions[Kind.AUDIO].render()),
    ):
        listed = dateranges_in(text)
        ids = [dr.id for dr in listed]
        assert len(ids) == len(set(ids)), f"{name}: a DATERANGE listed twice"
        assert {dr.id: format_date_time(dr.start_date) for dr in listed} == want, name
    assert hls.metadata_written == ll.metadata_written // 2 == len(added)
    # Reloads and deltas while live saw the same date ranges, never twice in one playlist.
    assert all(seen_full.values()) and all(ids <= set(want) for ids in seen_full.values())


# In-band bytes --------------------------------------------------------------------------


def test_id3_tag_and_emsg_box_layout():
    item = TimedMetadata("card-3", PRODUCT_CLASS, EPOCH, 90000, 5.0, (("X-PRODUCT-ID", "sku"), ("X-PRICE", 3)))
    tag = id3_tag(item)
    assert tag[:5] == b"ID3\x04\x00"
    size = tag[6] << 21 | tag[7] << 14 | tag[8] << 7 | tag[9]
    assert size == len(tag) - 10
    assert b"TXXX" in tag and b"X-PRODUCT-ID\x00sku" in tag and b"START-DATE\x002025-11-30T00:00:00.000Z" in tag
    box = emsg(90000, 123456789, 450000, 7, tag)
    assert struct.unpack(">I4sB", box[:9]) == (len(box), b"emsg", 1)
    timescale, presentation, duration, event_id = struct.unpack(">IQII", box[12:32])
    assert (timescale, presentation, duration, event_id) == (90000, 123456789, 450000, 7)
    assert box[32:].startswith(EMSG_ID3_SCHEME.encode() + b"\x00\x00") and box.endswith(tag)


# RTMP cue points ------------------------------------------------------------------------


def test_on_cue_point_becomes_a_cue_point_event_with_its_message_timestamp():
    session = ServerSession()
    session.state = "publishing"
    events: list = []
    body = amf0.encode(
        "onCuePoint", {"name": "product", "time": 1.5, "type": "event", "parameters": {"product_id": "sku-1"}}
    )
    session._handle(Message(DATA_AMF0, 1, 1500, body), events, 0.0)
    assert events == [CuePoint(1500, "product", {"product_id": "sku-1"})]


def test_cue_point_maps_to_the_frames_clock_and_wall_clock():
    frames = RtmpToFrames("s")
    frames._wall(1000, 500.0)  # the first frame anchored the wall clock: 1000 ms is 500.0 s
    item = frames.cue_point(3500, "product", {"product_id": 42.0, "duration": 15.0, "title": "Mug"}, 999.0)
    assert item is not None
    assert (item.pts, item.start_date, item.duration) == (3500 * 90, 502.5, 15.0)
    assert item.attributes == (("X-PRODUCT-ID", "42"), ("X-TITLE", "Mug"))
    assert frames.cue_point(3600, "chapter", {}, 999.0) is None
    with pytest.raises(MetadataError, match="product_id"):
        frames.cue_point(3700, "product", {}, 999.0)
