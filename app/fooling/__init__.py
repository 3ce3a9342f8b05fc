"""Fooling methods: pure, device-agnostic, step-wise generators (see base.py)."""
