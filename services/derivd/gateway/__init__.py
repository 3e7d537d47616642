"""The REST skin (FastAPI) over the core service."""
