"""The orchestrator: decision environment, reward, profiles, RiskGuard, orchestrators."""
