"""The app: the engine that owns and wires every part, the configuration, the stream
lifecycle, metrics, the CLI and the demo publisher.

May import anything; nothing imports it but the command-line entry points.
"""
