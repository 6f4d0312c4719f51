"""The Kamus encryptor service. gunicorn entry point: ``kamus_encryptor:create_app()``."""

from kamus_encryptor.app import create_app

__all__ = ["create_app"]
