"""The embedded store: SQLite with atomic claims, leases and migrations (never imports torch)."""
