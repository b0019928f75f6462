# Augments mediacore/jitter_buffer.py (linked here as jitter_buffer.py) for the compiled twin.
cdef class JitterBuffer:
    cdef public long clock_rate
    cdef public long capacity
    cdef long _mask
    cdef public double min_delay
    cdef public double max_delay
    cdef public double max_wait
    cdef public double loss_dwell
    cdef public long resync_packets
    cdef list _payloads
    cdef list _arrivals
    cdef list _seqs
    cdef list _missing_since
    cdef list _nacked
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

    cdef long long _extend(self, long long seq)
    cdef void _reset(self, long long ext)
    cpdef bint push(self, long long seq, long long timestamp, long long ssrc, object payload, double now)
    cdef void _skip_to(self, long long ext)
    cpdef list pop(self, double now)
    cpdef list nacks(self, double now)
