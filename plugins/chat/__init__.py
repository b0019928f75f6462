"""Chat, likes and gifts for a live room over WebSocket (`GET /live/{stream}/chat`), in one
process or across every node attached to one Redis. See docs/chat.md."""
