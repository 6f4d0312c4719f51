"""What kamus-cli and kamus-init share: the HTTP client of the Kamus services, certificate
pinning, client errors and their exit codes, the token file and the program runner.

It imports nothing outside the standard library, so the init container, which runs at every pod
start, pays for no third-party import.
"""
