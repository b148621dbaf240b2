"""The data stage: per-language corpora (in memory or streamed), parallel corpora and tasks."""
