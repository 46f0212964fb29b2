"""Tests of portraitseg.export (a package, so its conftest.py does not shadow tests/conftest.py)."""
