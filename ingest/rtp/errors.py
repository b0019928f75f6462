"""The RTP core's exception: a malformed packet is dropped and counted, never fatal to others."""


class RtpError(ValueError):
    """A packet or report is malformed; the message says which field and why."""
