"""The Kamus decryptor service. gunicorn entry point: ``kamus_decryptor:create_app()``."""

from kamus_decryptor.app import create_app

__all__ = ["create_app"]
