"""PacketFifo: the compiled twin and the pure twin behave identically."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediacore.hub import queues
from mediacore.hub.packet_fifo import PacketFifo as PurePacketFifo

IMPLEMENTATIONS = [PurePacketFifo]
if queues.FIFO_COMPILED:
    IMPLEMENTATIONS.append(queues.PacketFifo)


def test_compiled_twin_is_built():
    """`make install` builds the extension; the engine must be using it."""
    assert queues.FIFO_COMPILED, "cython_ext.packet_fifo was not compiled"
    assert queues.PacketFifo is not PurePacketFifo


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda c: c.__module__)
def impl(request):
    return request.param


def test_budgets_and_order(impl):
    q = impl(3, 100)
    assert q.push("a", 10) and q.push("b", 80)
    assert not q.push("c", 20)  # byte budget
    assert q.push("d", 10)
    assert not q.push("e", 1)  # item budget
    assert (q.dropped, q.dropped_bytes, len(q), q.nbytes) == (2, 21, 3, 100)
    q.push_force("event", 0)
    assert [q.pop() for _ in range(5)] == ["a", "b", "d", "event", None]


def test_grows_past_initial_capacity(impl):
    q = impl(10_000, 1 << 30)
    for i in range(5000):
        assert q.push(i, 1)
    assert [q.pop() for _ in range(5000)] == list(range(5000))


operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 5000)),
        st.tuples(st.just("force"), st.integers(0, 100)),
        st.tuples(st.just("pop"), st.just(0)),
        st.tuples(st.just("peek"), st.just(0)),
        st.tuples(st.just("clear"), st.just(0)),
    ),
    max_size=400,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 40), st.integers(1, 20000), operations)
def test_twins_agree_on_random_operation_sequences(max_items, max_bytes, ops):
    if not queues.FIFO_COMPILED:
        pytest.fail("compiled twin missing")
    a, b = PurePacketFifo(max_items, max_bytes), queues.PacketFifo(max_items, max_bytes)
    for n, (op, size) in enumerate(ops):
        if op == "push":
            assert a.push(n, size) == b.push(n, size)
        elif op == "force":
            a.push_force(n, size)
            b.push_force(n, size)
        elif op == "pop":
            assert a.pop() == b.pop()
        elif op == "peek":
            assert a.peek() == b.peek()
        else:
            a.clear()
            b.clear()
        assert (len(a), a.nbytes, a.dropped, a.dropped_bytes) == (len(b), b.nbytes, b.dropped, b.dropped_bytes)
