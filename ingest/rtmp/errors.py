"""The RTMP core's one exception type. Every violation by a peer becomes an RtmpError with a
stable, human-readable message; the server logs it once and closes only that connection."""


class RtmpError(Exception):
    """A peer broke the protocol or a configured limit. The connection must be closed."""
