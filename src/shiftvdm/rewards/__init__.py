"""Pixel-motion rewards: the critic (motion features -> IC and LC discriminators -> clipped rewards) and its
trainer (Eq. 7 on cached features, optimizer, replay store, EMA update)."""

from shiftvdm.rewards.critic import CriticConfig, MotionCritic, MotionFeatures, RewardOutput
from shiftvdm.rewards.critic_training import CriticTrainConfig, CriticTrainer, critic_step, pretrain_config
from shiftvdm.rewards.ic import ICConfig, ICDiscriminator
from shiftvdm.rewards.lc import LCConfig, LCDiscriminator
from shiftvdm.rewards.protocol import Critic

__all__ = [
    "Critic",
    "CriticConfig",
    "CriticTrainConfig",
    "CriticTrainer",
    "ICConfig",
    "ICDiscriminator",
    "LCConfig",
    "LCDiscriminator",
    "MotionCritic",
    "MotionFeatures",
    "RewardOutput",
    "critic_step",
    "pretrain_config",
]
