"""Generating answers: the engine, serving in the web process, and serving on workers."""
