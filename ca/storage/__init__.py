"""Persistence of the CA: SQLModel tables, the engine, migrations, and the repository."""
