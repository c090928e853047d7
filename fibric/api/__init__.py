"""The v1 REST API: a thin FastAPI adapter over the store and the controller."""

from fibric.api.app import create_app

__all__ = ["create_app"]
