"""Scaffolding for tests and benches (a loopback HTTP server, a tiny Qwen2): not used by the pipeline itself."""
