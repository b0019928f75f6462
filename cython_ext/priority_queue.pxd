# Augments mediacore/hub/priority_queue.py (linked here as priority_queue.py) for the compiled twin.
cdef class PriorityPacketQueue:
    cdef list _items
    cdef list _sizes
    cdef list _prios
    cdef Py_ssize_t _mask
    cdef Py_ssize_t _head
    cdef Py_ssize_t _tail
    cdef Py_ssize_t _count
    cdef Py_ssize_t _bytes
    cdef list _levels
    cdef bint _skip_video
    cdef public Py_ssize_t max_items
    cdef public Py_ssize_t max_bytes
    cdef public Py_ssize_t dropped
    cdef public Py_ssize_t dropped_bytes
    cdef public list dropped_by_priority

    cpdef bint push(self, object item, Py_ssize_t size, int priority)
    cpdef void push_force(self, object item, Py_ssize_t size)
    cdef void _count_drop(self, int priority, Py_ssize_t size)
    cdef void _append(self, object item, Py_ssize_t size, int priority)
    cdef void _make_room(self)
    cdef Py_ssize_t _oldest(self, int priority)
    cdef void _kill(self, Py_ssize_t seq)
    cdef bint _evict_below(self, int priority)
    cdef void _evict_gop_from(self, Py_ssize_t start)
    cpdef object pop(self)
    cpdef object peek(self)
    cpdef void clear(self)
