"""Dollar budgets that hold: config, windows, policy (pure), enforcement, alerts and the agent breaker."""
