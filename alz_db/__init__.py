"""Storage and coordination of searches (PostgreSQL), the workers and the command line."""
