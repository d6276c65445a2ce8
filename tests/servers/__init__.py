"""Real servers for the tests (PostgreSQL, Kafka), started by the suite itself
as pytest fixtures; see each module's docstring for how."""
