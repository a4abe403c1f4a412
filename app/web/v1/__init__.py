"""The OpenAI-compatible API under /v1: its routes, schemas and the streaming of answers."""
