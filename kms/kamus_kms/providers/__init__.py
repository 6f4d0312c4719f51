"""Key providers: the local keyring (embedded default) and remote KMS adapters."""
