"""The plugin API (`api.py`): what plugins (commerce, chat, audience) see of the engine.

May import: mediacore.model and mediacore.access.
"""
