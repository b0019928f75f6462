# Augments ingest/rtp/rtp_packet.py (linked here as rtp_packet.py) for the compiled twin.
cimport cython

cdef class RtpPacket:
    cdef public int payload_type
    cdef public unsigned int sequence
    cdef public unsigned int timestamp
    cdef public unsigned int ssrc
    cdef public bytes data
    cdef public Py_ssize_t payload_start
    cdef public Py_ssize_t payload_end
    cdef public bint marker
    cdef public tuple csrcs
    cdef public object extension_profile
    cdef public bytes extension
    cdef public int padding

@cython.locals(size=Py_ssize_t, pos=Py_ssize_t, end=Py_ssize_t, b0=cython.uint, b1=cython.uint, cc=cython.uint,
               hi=cython.uint, lo=cython.uint, words=cython.uint, padding=cython.uint, packet=RtpPacket)
cpdef RtpPacket parse_rtp(bytes data)
