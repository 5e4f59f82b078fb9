"""Rate limits, budgets and the quota leases that hold them across edges."""
