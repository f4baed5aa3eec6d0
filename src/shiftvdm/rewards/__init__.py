"""Pixel-motion rewards: IC and LC discriminators, the MotionCritic (features -> clipped logits), Eq. 7 training."""

from shiftvdm.rewards.critic import CriticConfig, MotionCritic, MotionFeatures, RewardOutput
from shiftvdm.rewards.discriminator_training import DiscriminatorTrainConfig, discriminator_step, pretrain_config
from shiftvdm.rewards.ic import ICConfig, ICDiscriminator
from shiftvdm.rewards.lc import LCConfig, LCDiscriminator

__all__ = [
    "CriticConfig",
    "DiscriminatorTrainConfig",
    "ICConfig",
    "ICDiscriminator",
    "LCConfig",
    "LCDiscriminator",
    "MotionCritic",
    "MotionFeatures",
    "RewardOutput",
    "discriminator_step",
    "pretrain_config",
]
