"""Policy checkpoints: the trained network plus everything needed to use it honestly.

A checkpoint is one ``torch.save`` file holding the policy weights and its architecture, the
observation layout, the tool slots it routes between (tool, provider, price, features), the
feature normalisation fitted on the training period, the training and validation periods, the
seed, the config and the code version. Loading it against a different tool set fails with a
clear error instead of silently feeding features into the wrong inputs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from quantorch.errors import ConfigError, UserInputError
from quantorch.orchestrator.dataset import ToolSlot
from quantorch.orchestrator.env import OBS_BOUND, POSITION_BUCKETS

__all__ = ["PolicyCheckpoint", "save_checkpoint", "load_checkpoint", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = 1


@dataclass
class PolicyCheckpoint:
    """A trained routing-and-position policy with its provenance."""

    policy: Any  # sb3_contrib MaskableActorCriticPolicy
    slots: list[ToolSlot]
    observation_names: list[str]
    normalisation: dict[str, tuple[list[float], list[float]]]
    horizon: int
    net_arch: list[int]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def tools(self) -> list[str]:
        return sorted({s.tool for s in self.slots})

    def predict(self, obs: np.ndarray, masks: np.ndarray, deterministic: bool = True) -> np.ndarray:
        actions, _ = self.policy.predict(obs, action_masks=masks, deterministic=deterministic)
        return np.asarray(actions, dtype=np.int64)

    def action_probabilities(self, obs: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """(n, n_actions) probabilities under the masks."""
        with torch.no_grad():
            tensor = torch.as_tensor(obs, dtype=torch.float32)
            distribution = self.policy.get_distribution(tensor, action_masks=masks)
            return distribution.distribution.probs.cpu().numpy()

    def check_slots(self, available: list[ToolSlot]) -> None:
        """Refuse to run when a slot the policy was trained on is missing or changed."""
        by_key = {s.key: s for s in available}
        for slot in self.slots:
            have = by_key.get(slot.key)
            if have is None:
                raise UserInputError(
                    f"checkpoint {self.meta.get('path', '')} was trained with tool {slot.key}, "
                    f"which is not available here (available: {', '.join(sorted(by_key)) or 'none'}); "
                    "retrain with `quantorch train` or use a matching checkpoint"
                )
            if tuple(have.features) != tuple(slot.features):
                raise UserInputError(
                    f"checkpoint was trained on tool {slot.key} with features "
                    f"{list(slot.features)} but it now returns {list(have.features)}; "
                    "retrain with `quantorch train`"
                )


def _build_policy(obs_dim: int, n_actions: int, net_arch: list[int]):
    from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy

    return MaskableActorCriticPolicy(
        gym.spaces.Box(-OBS_BOUND, OBS_BOUND, (obs_dim,), np.float32),
        gym.spaces.Discrete(n_actions),
        lr_schedule=lambda _progress: 0.0,
        net_arch=list(net_arch),
    )


def save_checkpoint(checkpoint: PolicyCheckpoint, path: str | Path) -> Path:
    """Write atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": checkpoint.policy.state_dict(),
        "obs_dim": len(checkpoint.observation_names),
        "n_actions": len(checkpoint.slots) + len(POSITION_BUCKETS),
        "net_arch": checkpoint.net_arch,
        "slots": [asdict(s) for s in checkpoint.slots],
        "observation_names": checkpoint.observation_names,
        "normalisation": checkpoint.normalisation,
        "horizon": checkpoint.horizon,
        "position_buckets": POSITION_BUCKETS.tolist(),
        "meta": {**checkpoint.meta, "saved_at": dt.datetime.now(dt.UTC).isoformat()},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> PolicyCheckpoint:
    """Load a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(
            f"checkpoint {path} not found; train one with `quantorch train --out {path}`"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise ConfigError(f"checkpoint {path} cannot be read ({exc}); retrain it") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(
            f"checkpoint {path} has format {payload.get('format') if isinstance(payload, dict) else '?'}, "
            f"this quantorch reads format {CHECKPOINT_FORMAT}; retrain it"
        )
    if payload["position_buckets"] != POSITION_BUCKETS.tolist():
        raise ConfigError(f"checkpoint {path} uses other position buckets; retrain it")
    policy = _build_policy(payload["obs_dim"], payload["n_actions"], payload["net_arch"])
    policy.load_state_dict(payload["state_dict"])
    policy.set_training_mode(False)
    slots = [ToolSlot(s["tool"], s["provider"], s["price_usd"], tuple(s["features"])) for s in payload["slots"]]
    return PolicyCheckpoint(
        policy=policy,
        slots=slots,
        observation_names=list(payload["observation_names"]),
        normalisation={k: (list(v[0]), list(v[1])) for k, v in payload["normalisation"].items()},
        horizon=int(payload["horizon"]),
        net_arch=list(payload["net_arch"]),
        meta={**payload["meta"], "path": str(path)},
    )
