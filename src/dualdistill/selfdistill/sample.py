"""Self-distillation step 1: sample K graded trajectories per training problem from the intermediate
student, through the one tool-integrated driver (``agent.driver.run_many``), with the paper's defaults
(``SampleConfig``).

Guarantees: records are appended to ``DIR/samples.jsonl`` one flushed line each, and a rerun resumes
where a kill left off; a resume under other settings (or other weights at the same path) is refused
naming the key; the problems and the config are saved beside the samples, so ``build`` needs nothing
else. A sharded run writes ``shard.json``; ``merge_shards`` joins the shards into what one run writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dualdistill.agent.driver import run_many
from dualdistill.agent.loop import AgentConfig, make_pool
from dualdistill.backends import BackendConfig
from dualdistill.core import shards

# How samples are cut and joined lives with composition (one module for every cut and join).
from dualdistill.core.config import check_bounds, identity, load_config, save_config, setting
from dualdistill.core.records import DataError, locked, provenance, write_jsonl
from dualdistill.core.resume import check_identity, model_fingerprint
from dualdistill.format.problems import Problem, load_problems, write_problems

SAMPLES_FILE = "samples.jsonl"
PROBLEMS_FILE = "problems.jsonl"
CONFIG_FILE = "sample_config.yaml"


# ----------------------------------------------------------------------------- configs
@dataclass
class SampleConfig:
    """Sampling settings; the defaults are the paper's. How each trajectory is generated is the one
    generation config (``agent.loop.AgentConfig``), as in ``eval`` and the teachers."""

    k: int = setting(
        16, ge=1, scope=True, help="Samples per problem (the paper's 16); may grow between runs."
    )
    seed: int = setting(0, help="Sampling seed.")
    shard: str = shards.shard_setting()
    backend: BackendConfig = field(default_factory=BackendConfig)  # the student, and how it is reached
    agent: AgentConfig = field(default_factory=AgentConfig)

    # Keys of configs written before the backend section.
    MOVED = {k: f"backend.{k}" for k in ("api", "tokenizer", "max_batch")}

    def __post_init__(self) -> None:
        check_bounds(self)
        shards.check_shard(self.shard)


# ----------------------------------------------------------------------------- 1. sampling
def sample(
    problems: list[Problem],
    backend,
    out_dir: str | Path,
    config: SampleConfig | None = None,
    *,
    pool=None,
    model: str = "",
    progress: bool = True,
) -> Path:
    """Sample ``config.k`` graded trajectories per problem into ``out_dir/samples.jsonl``; resumes.

    ``pool`` is a ``SandboxPool``; one with ``config.executor_timeout_s`` is made when omitted. ``model``
    (default ``config.backend.model``) is what the samples' identity fingerprints.
    Returns the samples file. The problems (with gold answers) and the config are saved beside it,
    so ``build`` needs nothing else.
    """
    config = config or SampleConfig()
    model = model or config.backend.model
    out_dir = Path(out_dir)
    everything, problems = problems, shards.take(problems, config.shard)
    with locked(out_dir, "self-distill sample"):
        identity, defaults = sample_identity(config, model), sample_identity(SampleConfig(), model)
        check_identity(out_dir, "sample", identity, SAMPLES_FILE, defaults)
        shards.mark(out_dir, config.shard, everything)
        _save_sampling_inputs(out_dir, problems, config, model)
        return _sample(problems, backend, out_dir, config, pool, progress)


def sample_identity(config: SampleConfig, model: str) -> dict:
    """What the samples depend on: every setting but the ``identity=False`` ones and the scope ``k`` (which
    may grow between runs; the first K are used), and the model's weights (not its path)."""
    ident = identity(config)
    ident["backend"].pop("model")
    return {**ident, "model": model_fingerprint(model)}


def _sample(
    problems: list[Problem], backend, out_dir: Path, config: SampleConfig, pool, progress: bool
) -> Path:

    agent_config = config.agent
    own_pool = pool is None and agent_config.tools
    if own_pool:
        pool = make_pool(agent_config)

    async def go():
        try:
            return await run_many(
                problems,
                backend,
                pool,
                agent_config,
                samples=config.k,
                out_path=out_dir / SAMPLES_FILE,
                seed=config.seed,
                progress=progress,
            )
        finally:
            if own_pool:
                await pool.close()  # its sessions' processes end here, not at interpreter exit

    asyncio.run(go())
    return out_dir / SAMPLES_FILE


def _save_sampling_inputs(out_dir: Path, problems: list[Problem], config: SampleConfig, model: str) -> None:
    path = out_dir / PROBLEMS_FILE
    if path.exists():  # resuming: the problem set must not change under the records
        before = [p.id for p in load_problems(path)]
        if before != [p.id for p in problems]:
            raise DataError(path, "holds a different problem set; sample into a new directory")
    else:
        write_problems(path, problems)
    save_config(config, out_dir / CONFIG_FILE)
    (out_dir / "provenance.json").write_text(
        json.dumps(provenance("self-distill sample", model=model), indent=1), encoding="utf-8"
    )


# ----------------------------------------------------------------------------- shards
def merge_shards(dirs: Sequence[str | Path], out: str | Path, *, allow_incomplete: bool = False) -> int:
    """Join the output directories of a sharded ``self-distill sample`` into ``out``: problems and samples
    in the problem set's order, and the config (``core.shards.merge``); returns the samples. Shards are
    the same job when their resume identities agree; each must hold its K samples of every problem."""

    def expected(d: Path, shard: shards.Shard, order: list[str]):
        k = load_config(SampleConfig, d / CONFIG_FILE).k
        for pid in order:
            if shards.in_shard(pid, shard):
                yield from ((pid, i) for i in range(k))

    def missing(dirs: list[Path], order: list[str]) -> list[str]:
        return shards.missing_records(dirs, SAMPLES_FILE, _sample_key, lambda d, s: expected(d, s, order))

    def write(dirs: list[Path], out: Path, index: dict[str, int]) -> int:
        shards.same_settings(dirs, lambda d: identity(load_config(SampleConfig, d / CONFIG_FILE)))
        config = dataclasses.replace(load_config(SampleConfig, dirs[0] / CONFIG_FILE), shard="")
        problems = sorted((p for d in dirs for p in load_problems(d / PROBLEMS_FILE)),
                          key=lambda p: shards.position(index, p.id))  # fmt: skip
        samples = shards.merge_records(dirs, SAMPLES_FILE, _sample_key,
                                lambda r: (shards.position(index, r["problem_id"]), r["sample_index"]))  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        write_problems(out / PROBLEMS_FILE, problems)
        write_jsonl(out / SAMPLES_FILE, samples)
        save_config(config, out / CONFIG_FILE)
        return len(samples)

    return shards.merge(dirs, out, write, missing=missing, allow_incomplete=allow_incomplete)


def _sample_key(r: dict) -> tuple[str, int]:
    return str(r["problem_id"]), r["sample_index"]
