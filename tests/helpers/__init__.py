"""Plain helper modules for the tests (no tests, no fixtures)."""
