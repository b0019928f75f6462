# Augments ingest/rtp/jitter_buffer.py (linked here as jitter_buffer.py) for the compiled twin.
cimport cython

cdef class JitterBuffer:
    cdef public long clock_rate
    cdef public long capacity
    cdef long long _mask
    cdef public double min_delay
    cdef public double max_delay
    cdef public double max_wait
    cdef public double loss_dwell
    cdef public long resync_packets
    cdef public int max_nacks
    cdef public double nack_interval
    cdef list _payloads
    cdef double[::1] _arrivals
    cdef long long[::1] _seqs
    cdef double[::1] _missing_since
    cdef signed char[::1] _nacked
    cdef list _ready
    cdef long long _ssrc
    cdef long long _next
    cdef long long _highest
    cdef double _last_transit
    cdef bint _have_transit
    cdef public double jitter
    cdef public long long received
    cdef public long long duplicates
    cdef public long long late
    cdef public long long lost
    cdef public long long reordered
    cdef public long long resyncs
    cdef public long long released

    cdef double _delay(self)
    cdef long long _extend(self, long long seq)
    @cython.locals(i=Py_ssize_t)
    cdef void _reset(self, long long ext)
    @cython.locals(ext=cython.longlong, index=cython.longlong, s=cython.longlong, gap=cython.longlong,
                   transit=cython.double, d=cython.double)
    cpdef bint push(self, long long seq, long long timestamp, long long ssrc, object payload, double now,
                    bint retransmitted=*)
    @cython.locals(index=cython.longlong)
    cdef void _skip_to(self, long long ext)
    @cython.locals(out=list, index=cython.longlong, s=cython.longlong, delay=cython.double, waited=cython.double)
    cpdef list pop(self, double now)
    @cython.locals(out=list, index=cython.longlong, s=cython.longlong, since=cython.double, delay=cython.double,
                   deadline=cython.double, asked=int)
    cpdef list nacks(self, double now)
