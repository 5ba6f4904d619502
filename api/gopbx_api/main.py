"""The service's entry point: `uvicorn --factory gopbx_api.main:app` (settings from GOPBX_API_SETTINGS)."""

from . import settings
from .app import create_app


def app():
    return create_app(settings.load())
