"""PriorityPacketQueue: the drop policy, the invariants a decoder needs, and the compiled twin
held equal to the pure one on random operation sequences."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediacore.hub import queues as compiled
from mediacore.hub.priority_queue import AUDIO, CONTROL, KEY, NONREF, REF
from mediacore.hub.priority_queue import PriorityPacketQueue as PureQueue

IMPLEMENTATIONS = [PureQueue]
if compiled.QUEUE_COMPILED:
    IMPLEMENTATIONS.append(compiled.PriorityPacketQueue)


def test_compiled_twin_is_built():
    assert compiled.QUEUE_COMPILED, "cython_ext.priority_queue was not compiled"
    assert compiled.PriorityPacketQueue is not PureQueue


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda c: c.__module__)
def impl(request):
    return request.param


def drain(q) -> list:
    out = []
    while (item := q.pop()) is not None:
        out.append(item)
    return out


def test_non_reference_frames_go_first_one_at_a_time(impl):
    q = impl(4, 1 << 20)
    for item, priority in (("K0", KEY), ("b1", NONREF), ("P2", REF), ("b3", NONREF)):
        assert q.push(item, 10, priority)
    assert q.push("P4", 10, REF)  # evicts the oldest non-reference frame, b1
    assert q.push("a0", 10, AUDIO)  # evicts b3
    assert drain(q) == ["K0", "P2", "P4", "a0"]
    assert q.dropped_by_priority[NONREF] == 2 and q.dropped == 2 and not q.skipping_video


def test_audio_evicts_the_gop_tail_and_video_skips_to_the_next_keyframe(impl):
    q = impl(4, 1 << 20)
    for item, priority in (("K0", KEY), ("P1", REF), ("P2", REF), ("a0", AUDIO)):
        assert q.push(item, 10, priority)
    assert q.push("a1", 10, AUDIO)  # evicts P1 and, with it, P2 (it depends on P1)
    assert q.skipping_video
    assert not q.push("P3", 10, REF)  # the rest of the broken GOP is refused
    assert not q.push("b4", 10, NONREF)
    assert q.push("K5", 10, KEY)
    assert not q.skipping_video
    assert drain(q) == ["K0", "a0", "a1", "K5"]
    assert (q.dropped, q.dropped_by_priority[REF], q.dropped_by_priority[NONREF]) == (4, 3, 1)


def test_keyframe_replaces_a_stale_gop(impl):
    q = impl(3, 1 << 20)
    for item, priority in (("K0", KEY), ("P1", REF), ("P2", REF)):
        assert q.push(item, 10, priority)
    assert not q.push("P3", 10, REF)  # nothing less important queued: refused, GOP left
    assert q.push("K4", 10, KEY)  # evicts P1..P2, the stale GOP's tail
    assert q.push("P5", 10, REF)
    assert drain(q) == ["K0", "K4", "P5"]


def test_audio_is_never_evicted_and_events_always_fit(impl):
    q = impl(2, 100)
    assert q.push("a0", 50, AUDIO) and q.push("a1", 50, AUDIO)
    assert not q.push("K2", 10, KEY)
    assert not q.push("a3", 1, AUDIO)
    q.push_force("event", 0)
    assert q.push("ctl", 0, CONTROL)
    assert drain(q) == ["a0", "a1", "event", "ctl"]
    assert q.dropped_by_priority[AUDIO] == 1 and q.dropped_by_priority[KEY] == 1


def test_byte_budget_evicts_as_many_as_needed(impl):
    q = impl(100, 100)
    for i in range(5):
        assert q.push(f"b{i}", 20, NONREF)
    assert q.push("K", 70, KEY)  # needs room for 70 bytes: four non-reference frames go
    assert drain(q) == ["b4", "K"]
    assert q.dropped == 4 and q.dropped_bytes == 80
    assert not q.push("huge", 101, AUDIO)


def test_long_stall_keeps_memory_bounded(impl):
    """A consumer that never reads: dead slots are compacted away, the ring does not grow."""
    q = impl(50, 1 << 30)
    for i in range(100_000):
        q.push(i, 100, AUDIO if i % 3 else (KEY if i % 90 == 0 else NONREF))
    assert len(q) == 50
    if impl is PureQueue:
        assert len(q._items) <= 256


@st.composite
def operations(draw):
    ops = []
    for _ in range(draw(st.integers(0, 300))):
        op = draw(st.sampled_from(["K", "R", "R", "N", "N", "A", "A", "C", "pop", "pop", "peek", "clear"]))
        size = draw(st.integers(0, 3000))
        ops.append((op, size))
    return ops


PRIORITY = {"K": KEY, "R": REF, "N": NONREF, "A": AUDIO, "C": CONTROL}


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 30), st.integers(1, 20000), operations())
def test_twins_agree_on_random_operation_sequences(max_items, max_bytes, ops):
    if not compiled.QUEUE_COMPILED:
        pytest.fail("compiled twin missing")
    a, b = PureQueue(max_items, max_bytes), compiled.PriorityPacketQueue(max_items, max_bytes)
    for n, (op, size) in enumerate(ops):
        if op in PRIORITY:
            assert a.push(n, size, PRIORITY[op]) == b.push(n, size, PRIORITY[op])
        elif op == "pop":
            assert a.pop() == b.pop()
        elif op == "peek":
            assert a.peek() == b.peek()
        else:
            a.clear()
            b.clear()
        assert (len(a), a.nbytes, a.dropped, a.dropped_bytes, a.skipping_video) == (
            len(b),
            b.nbytes,
            b.dropped,
            b.dropped_bytes,
            b.skipping_video,
        )
        assert a.dropped_by_priority == b.dropped_by_priority


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 30), st.integers(1, 20000), operations())
def test_what_is_delivered_stays_decodable(max_items, max_bytes, ops):
    """Arrival order kept; every delivered video frame has every reference frame of its GOP
    before it delivered too; media stays within the budgets; each media item is delivered,
    cleared or counted as dropped, exactly once."""
    q = PureQueue(max_items, max_bytes)
    meta: dict[int, tuple[int, int, int]] = {}  # n -> (priority, gop, size)
    delivered: list[int] = []
    cleared = 0  # media items discarded by clear()
    gop = 0
    controls_queued = control_bytes = 0

    def took(item: int, into: list[int]) -> None:
        nonlocal controls_queued, control_bytes
        into.append(item)
        if meta[item][0] == CONTROL:
            controls_queued -= 1
            control_bytes -= meta[item][2]

    for n, (op, size) in enumerate(ops):
        if op in PRIORITY:
            priority = PRIORITY[op]
            gop += priority == KEY
            meta[n] = (priority, gop, size)
            q.push(n, size, priority)
            if priority == CONTROL:
                controls_queued += 1
                control_bytes += size
        elif op == "pop":
            if (item := q.pop()) is not None:
                took(item, delivered)
        elif op == "clear":
            cleared += len(q) - controls_queued
            controls_queued = control_bytes = 0
            q.clear()
        assert len(q) - controls_queued <= max_items
        assert q.nbytes - control_bytes <= max_bytes
    while (item := q.pop()) is not None:
        took(item, delivered)
    assert delivered == sorted(delivered)
    seen = set(delivered)
    for n in delivered:
        priority, g, _ = meta[n]
        if priority in (REF, NONREF):
            needed = [m for m, (p, gm, _) in meta.items() if m < n and gm == g and p in (KEY, REF)]
            assert all(m in seen for m in needed), f"frame {n} delivered after a dropped reference"
    media = sum(1 for m in meta.values() if m[0] != CONTROL)
    media_out = sum(1 for n in delivered if meta[n][0] != CONTROL)
    assert media_out + cleared + q.dropped == media
    assert q.dropped == sum(q.dropped_by_priority) and q.dropped_by_priority[CONTROL] == 0


def test_a_queue_starts_small_and_grows_to_its_whole_budget_in_order(impl):
    """The ring starts at INITIAL_SLOTS (a packager's queue is nearly always short) and
    doubles as the backlog grows, up to the frame budget, keeping arrival order."""
    q = impl(2048, 1 << 30)
    for i in range(2048):
        assert q.push(i, 1, AUDIO if i % 3 else KEY)
    assert len(q) == 2048 and q.dropped == 0
    assert drain(q) == list(range(2048))
