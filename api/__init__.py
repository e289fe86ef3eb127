"""The REST service: ``create_app`` builds it, ``omniret serve`` runs it with uvicorn."""

from omniret.api.app import create_app

__all__ = ["create_app"]
