"""How the SFT loss weighs trajectories: ``loss_normalization: token | sequence``.

- ``token`` (TRL's default): the mean over every trained token of the batch, so a long trajectory
  weighs more than a short one.
- ``sequence``: the mean over trajectories of each one's mean token loss, so every trajectory weighs the
  same. The released DualDistill training gets this by training one trajectory per step with no
  gradient accumulation (``sft/train.py``: batch 1, ``outputs.loss``); here it holds for any batch size,
  packed or padded. In a packed row the sequences are found where the position ids restart at 0.

Guarantees: ``sequence_mean_loss`` equals the mean of the per-sequence ``token`` losses; a sequence
with no trained token counts in neither. Gradient accumulation divides a per-micro-batch mean by the
accumulation steps (``loss_is_scaled_for_ga = False``), as for the released per-step loss.

Not guaranteed: memory as low as TRL's fused token loss; ``sequence`` computes the full logits of the
batch, as the released code's ``model(**batch)`` does.
"""

from __future__ import annotations

IGNORE = -100


def sequence_ids(labels, position_ids=None):
    """A sequence index per (row, position): rows of a padded batch, restarts of packed position ids."""
    import torch

    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(labels)
    if position_ids is None:
        return rows
    starts = (position_ids == 0).long().cumsum(dim=1)  # 1, 1, 1, 2, 2, ... within each row
    return rows * (labels.shape[1] + 1) + starts


def sequence_mean_loss(logits, labels, position_ids=None):
    """Mean over sequences of each sequence's mean next-token loss on its trained (non -100) labels."""
    import torch
    import torch.nn.functional as F

    target = labels[:, 1:]
    seq = sequence_ids(labels, position_ids)[:, 1:]  # the sequence of the predicted token
    per_token = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=IGNORE,
        reduction="none",
    ).view_as(target)  # fmt: skip
    mask = target != IGNORE
    _, index = torch.unique(seq, return_inverse=True)
    n = int(index.max()) + 1
    sums = torch.zeros(n, device=logits.device).scatter_add(
        0, index.reshape(-1), (per_token * mask).reshape(-1)
    )
    counts = torch.zeros(n, device=logits.device).scatter_add(0, index.reshape(-1), mask.reshape(-1).float())
    trained = counts > 0
    if not trained.any():
        return logits.sum() * 0.0  # a batch without a trained token: zero, with a graph
    return (sums[trained] / counts[trained]).mean()


def sequence_mean_trainer():
    """``trl.SFTTrainer`` with ``sequence_mean_loss`` (built lazily: TRL imports are slow)."""
    from trl import SFTTrainer

    class SequenceMeanSFTTrainer(SFTTrainer):
        loss_is_scaled_for_ga = False  # a per-micro-batch mean: the Trainer divides by the GA steps

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"]
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
            loss = sequence_mean_loss(outputs.logits, labels, inputs.get("position_ids"))
            return (loss, outputs) if return_outputs else loss

    return SequenceMeanSFTTrainer
