"""Plumbing both Kamus services share: settings, JSON errors, logging, health and metrics."""
