"""Actors: the Actor base, the Supervisor, one module per actor, the CLI entry."""
