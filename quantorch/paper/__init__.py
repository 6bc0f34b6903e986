"""Scheduled paper trading: cycles, the scheduler, accounts."""
