"""mediacore-bench: benchmark suites that print tables, write JSON and compare with peers."""
