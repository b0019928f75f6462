# Augments mediacore/packager/ts_packets.py (linked here as ts_packets.py) for the compiled twin.
cimport cython

cdef Py_ssize_t TS_PACKET, TS_PAYLOAD, PCR_FIELD
cdef int SYNC_BYTE, AF_RANDOM_ACCESS, AF_PCR

cpdef Py_ssize_t first_adaptation(long long pcr_90k, bint random_access)

cpdef Py_ssize_t pes_packets(Py_ssize_t size, long long pcr_90k, bint random_access)

@cython.locals(dst="unsigned char[::1]", src="const unsigned char[::1]", size=Py_ssize_t, pos=Py_ssize_t,
               first=bint, left=Py_ssize_t, adaptation=Py_ssize_t, head=Py_ssize_t, flags=int,
               filled=Py_ssize_t, base="unsigned long long", take=Py_ssize_t, pcr_only=bint)
cpdef Py_ssize_t write_pes(bytearray out, Py_ssize_t at, bytes pes, int pid, int counter, long long pcr_90k,
                           bint random_access)
