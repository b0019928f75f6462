"""RTP ingest: RTSP publish (rtsp, session, server), raw RTP inputs described by an SDP
(raw), RTP/RTCP packets, the jitter buffer, depacketizers and the sans-I/O track receiver
(NACK, PLI, receiver reports), with compiled twins of the hot loops."""
