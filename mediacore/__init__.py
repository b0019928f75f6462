"""mediacore: a live-streaming engine for live commerce.

The sub-packages are the stages of the data path, and imports point one way along it:
model <- hub <- packager -> store <- origin <- app, with playlist beside the store (see
docs/architecture.md; tests/test_import_graph.py holds the rule).
"""

__version__ = "0.1.0"
