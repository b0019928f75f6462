# Augments ingest/rtp/h264_depacketize.py (linked here as h264_depacketize.py) for the compiled twin.
cimport cython

cdef class H264Depacketizer:
    cdef public object sps
    cdef public object pps
    cdef public bint repair
    cdef list _nalus
    cdef Py_ssize_t _size
    cdef object _timestamp
    cdef list _fragment
    cdef Py_ssize_t _fragment_size
    cdef bint _damaged
    cdef bint _next_damaged
    cdef object _gap_timestamp
    cdef bint _confined
    cdef bint _ref_slice
    cdef bint _nonref_slice
    cdef bint _need_keyframe
    cdef public Py_ssize_t dropped_fragments
    cdef public Py_ssize_t damaged_units
    cdef public Py_ssize_t skipped_units
    cdef public Py_ssize_t nonref_damaged_units
    cdef public Py_ssize_t errors

    cpdef void lost(self)
    cdef void _slice(self, int header)
    cdef void _parameter_set(self, bytes nal)
    cdef void _add(self, bytes nal)
    @cython.locals(damaged=bint, disposable=bint, keyframe=bint, parts=list, nal=bytes)
    cdef list _flush(self)
    @cython.locals(out=list, data=bytes, pos=Py_ssize_t, stop=Py_ssize_t, nal_type=int, size=Py_ssize_t,
                   indicator=int, header=int)
    cpdef list push(self, object packet)
