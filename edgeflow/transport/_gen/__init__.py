"""Generated from proto/edgeflow/v1 by ``python -m edgeflow.transport.gen``. Do not edit."""
