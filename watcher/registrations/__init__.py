"""Registrations: what a user says a registry is (spec, scope, forms, `apply` files), registering it, the
registry store, credentials at rest (vault, key rotation) and API tokens."""
