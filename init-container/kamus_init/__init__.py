"""kamus-init: the init container that decrypts a pod's Kamus ciphertexts into files."""
