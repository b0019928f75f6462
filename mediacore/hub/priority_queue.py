"""Bounded priority packet queue: each hub subscriber's egress queue.

Delivery stays in arrival order (each track's decode order and the audio/video interleaving
that packagers rely on are kept); priority decides what is given up when a consumer falls
behind and the packet or byte budget is reached:

    CONTROL  events (publisher left, discontinuity): never dropped, may exceed the budget
    AUDIO    never evicted; refused only when the queue holds nothing but audio and events
    KEY      video keyframes
    REF      other reference video frames
    NONREF   non-reference (disposable) video frames: evicted first, one at a time

An incoming item may evict queued items of strictly lower priority. Evicting a reference
frame or keyframe evicts the rest of its GOP with it (up to the next queued keyframe), and
if that GOP is the one still arriving, incoming video is refused until the next keyframe:
a consumer never receives a GOP with a hole in it. Every refused or evicted item is
counted, per priority.

This one source is also compiled by Cython (cython_ext/priority_queue.py links here, with
the augmenting priority_queue.pxd beside it); tests hold the two twins equal.
"""

from collections import deque

CONTROL = 0
AUDIO = 1
KEY = 2
REF = 3
NONREF = 4
LEVELS = 5
_DEAD = -1
INITIAL_SLOTS = 64
"""Ring slots a queue starts with (at most): it doubles when its backlog fills it. A
packager's queue is short almost always, and a ring sized for its 2,048-frame budget up
front cost 48 KB per queue, two per stream."""


class PriorityPacketQueue:
    def __init__(self, max_items: int, max_bytes: int) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("PriorityPacketQueue budgets must be positive")
        capacity = 8
        while capacity < max_items and capacity < INITIAL_SLOTS:
            capacity *= 2
        self._items: list = [None] * capacity
        self._sizes: list = [0] * capacity
        self._prios: list = [_DEAD] * capacity
        self._mask = capacity - 1
        self._head = 0  # sequence number of the oldest slot (live or dead)
        self._tail = 0  # sequence number the next push takes
        self._count = 0
        self._bytes = 0
        # Sequence numbers per priority, oldest first; may hold stale entries (skipped lazily).
        self._levels: list = [deque() for _ in range(LEVELS)]
        self._skip_video = False
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.dropped = 0
        self.dropped_bytes = 0
        self.dropped_by_priority: list = [0] * LEVELS

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def skipping_video(self) -> bool:
        """True while incoming video is refused until the next keyframe."""
        return self._skip_video

    def push(self, item: object, size: int, priority: int) -> bool:
        """Queue `item`; False (and counted) if it was refused."""
        if priority < CONTROL or priority > NONREF:
            raise ValueError("priority out of range")
        if priority == CONTROL:
            self._append(item, size, priority)
            return True
        if priority >= KEY and self._skip_video:
            if priority != KEY:
                self._count_drop(priority, size)
                return False
            self._skip_video = False
        while self._count >= self.max_items or self._bytes + size > self.max_bytes:
            if not self._evict_below(priority):
                self._count_drop(priority, size)
                if priority == KEY or priority == REF:
                    self._skip_video = True
                return False
        if priority > KEY and self._skip_video:
            # Eviction just dropped the GOP this frame belongs to.
            self._count_drop(priority, size)
            return False
        if priority == KEY:
            self._skip_video = False
        self._append(item, size, priority)
        return True

    def push_force(self, item: object, size: int) -> None:
        """Queue a control event regardless of the budgets."""
        self._append(item, size, CONTROL)

    def _count_drop(self, priority: int, size: int) -> None:
        self.dropped += 1
        self.dropped_bytes += size
        self.dropped_by_priority[priority] += 1

    def _append(self, item: object, size: int, priority: int) -> None:
        if self._tail - self._head > self._mask:
            self._make_room()
        seq = self._tail
        index = seq & self._mask
        self._items[index] = item
        self._sizes[index] = size
        self._prios[index] = priority
        self._levels[priority].append(seq)
        self._tail = seq + 1
        self._count += 1
        self._bytes += size

    def _make_room(self) -> None:
        """The ring is full of live and dead slots: compact it, doubling if mostly live."""
        capacity = self._mask + 1
        if self._count * 2 > capacity:
            capacity *= 2
        items: list = [None] * capacity
        sizes: list = [0] * capacity
        prios: list = [_DEAD] * capacity
        levels: list = [deque() for _ in range(LEVELS)]
        n = 0
        seq = self._head
        while seq < self._tail:
            index = seq & self._mask
            priority = self._prios[index]
            if priority != _DEAD:
                items[n] = self._items[index]
                sizes[n] = self._sizes[index]
                prios[n] = priority
                levels[priority].append(n)
                n += 1
            seq += 1
        self._items = items
        self._sizes = sizes
        self._prios = prios
        self._levels = levels
        self._mask = capacity - 1
        self._head = 0
        self._tail = n

    def _oldest(self, priority: int) -> int:
        """Sequence number of the oldest live item of this priority, or -1."""
        level = self._levels[priority]
        while level:
            seq = level[0]
            if seq >= self._head and self._prios[seq & self._mask] == priority:
                return seq
            level.popleft()
        return -1

    def _kill(self, seq: int) -> None:
        index = seq & self._mask
        priority = self._prios[index]
        size = self._sizes[index]
        self._items[index] = None
        self._prios[index] = _DEAD
        self._count -= 1
        self._bytes -= size
        self._count_drop(priority, size)

    def _evict_below(self, priority: int) -> bool:
        """Evict the least important queued item(s) of lower priority than `priority`."""
        level = NONREF
        while level > priority:
            seq = self._oldest(level)
            if seq >= 0:
                if level == NONREF:
                    self._kill(seq)
                else:
                    self._evict_gop_from(seq)
                return True
            level -= 1
        return False

    def _evict_gop_from(self, start: int) -> None:
        """Evict video from `start` up to (not including) the next queued keyframe."""
        self._kill(start)
        seq = start + 1
        while seq < self._tail:
            priority = self._prios[seq & self._mask]
            if priority == KEY:
                return
            if priority > KEY:
                self._kill(seq)
            seq += 1
        self._skip_video = True

    def pop(self) -> object:
        """Remove and return the oldest live item, or None when empty."""
        while self._head < self._tail:
            seq = self._head
            index = seq & self._mask
            self._head = seq + 1
            priority = self._prios[index]
            if priority == _DEAD:
                continue
            item = self._items[index]
            self._items[index] = None
            self._prios[index] = _DEAD
            self._count -= 1
            self._bytes -= self._sizes[index]
            self._sizes[index] = 0  # no size object kept per slot: 2 x 2048 slots per stream
            level = self._levels[priority]
            while level and level[0] <= seq:
                level.popleft()
            return item
        return None

    def peek(self) -> object:
        seq = self._head
        while seq < self._tail:
            index = seq & self._mask
            if self._prios[index] != _DEAD:
                return self._items[index]
            seq += 1
        return None

    def clear(self) -> None:
        """Discard everything queued; video resumes at the next keyframe."""
        while self._count:
            self.pop()
        self._head = self._tail
        self._skip_video = True
