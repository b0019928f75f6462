# Augments mediacore/hub/packet_fifo.py (linked here as packet_fifo.py) for the compiled twin.
cdef class PacketFifo:
    cdef list _items
    cdef list _sizes
    cdef Py_ssize_t _head
    cdef Py_ssize_t _count
    cdef Py_ssize_t _mask
    cdef Py_ssize_t _bytes
    cdef public Py_ssize_t max_items
    cdef public Py_ssize_t max_bytes
    cdef public Py_ssize_t dropped
    cdef public Py_ssize_t dropped_bytes

    cpdef bint push(self, object item, Py_ssize_t size)
    cpdef void push_force(self, object item, Py_ssize_t size)
    cdef void _append(self, object item, Py_ssize_t size)
    cdef void _grow(self)
    cpdef object pop(self)
    cpdef object peek(self)
    cpdef void clear(self)
