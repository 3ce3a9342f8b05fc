"""Fooling methods: pure, device-agnostic, step-wise generators of Snapshots (see base.py), their
encodings (direct pixels, CPPN), the MAP-Elites archive, gradient and adversarial attacks, and the
figures drawn from their snapshots. Reads models and the 8-bit image grid; knows nothing of jobs."""
