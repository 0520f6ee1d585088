"""Serving models: the SGLang-compatible local server."""
