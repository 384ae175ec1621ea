"""SFT on composed trajectories: loss masks from spans (masking), training (train), HTML viewer (viewer)."""

from dualdistill.sft.masking import MaskConfig, encode
from dualdistill.sft.train import SFTConfig, train, train_run

__all__ = ["MaskConfig", "SFTConfig", "encode", "train", "train_run"]
