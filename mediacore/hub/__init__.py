"""The hub: one Stream per name, fanning frames out to subscribers through bounded
priority queues (with their compiled twins), and the Publisher protocol ingest publishes
through.

May import: mediacore.model. Ingest sees only `mediacore.hub.publisher`.
"""
