"""Helpers shared by the test suites: small real models built once and cached."""
