"""Shipped configuration files (installed as ``quantorch.configs``); YAML only lives here."""
