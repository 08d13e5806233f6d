"""The read side: the one read model every reader shares (CLI, API, console), the views built on its rows,
and the deployment's counters."""
