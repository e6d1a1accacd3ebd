"""Certificate analysis shared by `cert verify` (offline) and the agent (`cert watch`):
ct (log list, RFC 6962 SCT verification) and analyze (flags, threat level, verdict)."""
