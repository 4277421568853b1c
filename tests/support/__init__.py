"""Helpers shared by the test suites (real PostgreSQL, real BEAM)."""
