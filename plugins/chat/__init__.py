"""Live chat: WebSocket rooms, likes and gifts, limits and moderation."""
