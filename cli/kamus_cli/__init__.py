"""kamus-cli: encrypt secrets for one namespace and service account with a Kamus encryptor."""
