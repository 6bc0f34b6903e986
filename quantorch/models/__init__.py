"""Checkpoints shipped with quantorch, produced by `quantorch train` (see docs/reward.md)."""
