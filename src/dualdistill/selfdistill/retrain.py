"""Self-distillation's last step: continue from the intermediate student's weights on the built set.

Guarantees: the optimizer, schedule and step count start fresh (only the weights carry over; the released
code resumed the finished first stage's trainer state, which left its second stage zero epochs); a killed
retrain resumes its own checkpoints, another run's are refused, and a retrain of zero steps is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

# How samples are cut and joined lives with composition (one module for every cut and join).
from dualdistill.core.records import DataError
from dualdistill.sft.train import train_run

# ----------------------------------------------------------------------------- 5. retraining
RETRAIN_MARKER = "selfdistill_retrain.json"


def retrain(model_dir: str | Path, data_path: str | Path, out_dir: str | Path, sft_config) -> Path:
    """Continue from the intermediate student's weights on the self-distillation set; returns the model dir.

    The optimizer, schedule and step count start fresh: only the weights of ``model_dir`` carry over.
    The released code resumed the finished first stage's trainer state instead, which left its
    second stage zero epochs to run. Here ``out_dir`` may only hold checkpoints of this same retrain
    (a killed run resumes); any other run's checkpoints are refused, and a run that trains zero steps
    raises instead of passing for a retrained model.
    """

    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir).resolve()
    if out_dir == model_dir or out_dir in model_dir.parents:
        raise DataError(out_dir, "the output directory holds the initial model; give a new --out")
    marker = out_dir / RETRAIN_MARKER
    identity = {"init_model": str(model_dir), "data": str(Path(data_path).resolve())}
    checkpoints = sorted(out_dir.glob("checkpoint-*")) if out_dir.is_dir() else []
    if checkpoints and (not marker.exists() or json.loads(marker.read_text()) != identity):
        raise DataError(
            out_dir,
            "holds checkpoints of another run; resuming them would continue that run's trainer state "
            "(zero steps left after a finished run). Give a new --out",
        )
    if (
        marker.exists()
        and json.loads(marker.read_text()) == identity
        and (out_dir / "model" / "train_summary.json").exists()
    ):
        return out_dir / "model"  # this very retrain finished before
    resumed_at = max((int(c.name.split("-")[-1]) for c in checkpoints), default=0) if sft_config.resume else 0
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(identity), encoding="utf-8")
    result = train_run(sft_config, data_path, out_dir, init_model=str(model_dir))
    if result.steps <= resumed_at:
        raise RuntimeError(
            f"retraining ran {result.steps - resumed_at} optimizer steps (check epochs/max_steps in the recipe)"
        )
    return result.model_dir
