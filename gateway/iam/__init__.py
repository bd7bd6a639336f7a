"""Off-chain user management of one institution, event-sourced on its IAM topic."""
