"""Importable plug-ins for the tests (a user's own dataset class, loaded by custom_imports)."""
