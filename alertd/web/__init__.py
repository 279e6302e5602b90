"""The web part: sign-up with double opt-in, manage and unsubscribe pages, and a JSON API."""

from alertd.web.app import create_app
from alertd.web.server import run_web, serve_web

__all__ = ["create_app", "run_web", "serve_web"]
