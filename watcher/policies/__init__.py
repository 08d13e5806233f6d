"""Policies: which image of a repository to deploy. `strategies` holds the selection itself, pure (no
database, no I/O), so the poll, the API and the tests all select the same way."""

from watcher.policies.strategies import Candidate, Policy, Selection, Strategy, select

__all__ = ["Candidate", "Policy", "Selection", "Strategy", "select"]
