"""The trainers: pure torch, transformers and peft; no database, no Celery, no HTTP."""
