"""Talking to registries: the HTTP transport and its limits, body cap, network policy and origin guard,
token auth, the OCI client, the reference grammar. Every byte a registry sends is read here first."""
