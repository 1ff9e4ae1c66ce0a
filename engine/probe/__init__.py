"""Probes: hook points in attention, the attention synopsis, weight-space screening."""
