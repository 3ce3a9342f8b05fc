"""Data sets the lab trains and tests on: MNIST, fetched and verified by sha256 (never at import)."""
