"""shoal tracker: who holds which blob. Never imports peer."""
