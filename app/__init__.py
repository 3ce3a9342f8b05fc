"""Fooling Lab: watch deep neural networks get fooled, live. See docs/architecture.md for the layers."""
