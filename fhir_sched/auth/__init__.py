"""Authorization: the hook every interaction passes (allow-all until SMART lands)."""
