"""Bundled model specs (YAML package data); load them with ``tokenprune.load_spec(name)``."""
