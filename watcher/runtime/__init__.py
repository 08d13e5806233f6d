"""This process: who it is to a lease, its garbage collector around big polls, and its stop request."""
