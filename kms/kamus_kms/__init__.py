"""Kamus crypto core: scopes, the v1 ciphertext format, keyrings and providers. No web code."""
