"""``python -m edgeflow`` == the ``edgeflow`` command."""

from edgeflow.cli.main import app

app()
