"""PPO training of the routing policy."""
