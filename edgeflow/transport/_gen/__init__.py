"""Generated from proto/ by ``python -m edgeflow.transport.gen``. Do not edit."""
