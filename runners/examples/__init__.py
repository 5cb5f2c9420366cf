"""Reference runners for tests and demos."""
