"""Test tools that ship with the product: codec conformance, fakes, tiny models."""
