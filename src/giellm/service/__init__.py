"""The HTTP service: the fair batcher, the FastAPI app and the server."""
