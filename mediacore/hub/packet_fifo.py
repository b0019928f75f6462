"""Bounded FIFO of media items: each subscriber's egress queue in the hub.

This one source is also compiled by Cython (cython_ext/packet_fifo.py links here, with the
augmenting packet_fifo.pxd beside it), so the compiled and pure twins cannot drift apart.
A push beyond the item or byte budget is refused and counted, never blocks; push_force
(for control events that must not be lost) may exceed the budget.
"""


class PacketFifo:
    def __init__(self, max_items: int, max_bytes: int) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("PacketFifo budgets must be positive")
        capacity = 8
        while capacity < max_items and capacity < 4096:
            capacity *= 2
        self._items: list = [None] * capacity
        self._sizes: list = [0] * capacity
        self._head = 0
        self._count = 0
        self._mask = capacity - 1
        self._bytes = 0
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.dropped = 0
        self.dropped_bytes = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return self._bytes

    def push(self, item: object, size: int) -> bool:
        """Append unless a budget would be exceeded; False (and counted) if refused."""
        if self._count >= self.max_items or self._bytes + size > self.max_bytes:
            self.dropped += 1
            self.dropped_bytes += size
            return False
        self._append(item, size)
        return True

    def push_force(self, item: object, size: int) -> None:
        """Append regardless of the budgets (for events that must not be lost)."""
        self._append(item, size)

    def _append(self, item: object, size: int) -> None:
        if self._count > self._mask:
            self._grow()
        index = (self._head + self._count) & self._mask
        self._items[index] = item
        self._sizes[index] = size
        self._count += 1
        self._bytes += size

    def _grow(self) -> None:
        capacity = (self._mask + 1) * 2
        items: list = [None] * capacity
        sizes: list = [0] * capacity
        for i in range(self._count):
            j = (self._head + i) & self._mask
            items[i] = self._items[j]
            sizes[i] = self._sizes[j]
        self._items = items
        self._sizes = sizes
        self._head = 0
        self._mask = capacity - 1

    def pop(self) -> object:
        """Remove and return the oldest item, or None when empty."""
        if self._count == 0:
            return None
        index = self._head
        item = self._items[index]
        self._items[index] = None
        self._bytes -= self._sizes[index]
        self._head = (index + 1) & self._mask
        self._count -= 1
        return item

    def peek(self) -> object:
        if self._count == 0:
            return None
        return self._items[self._head]

    def clear(self) -> None:
        while self._count:
            self.pop()
