"""WSGI entry point for gunicorn: one application per worker, built by the factory."""

from mediator.app import create_app

app = create_app()
