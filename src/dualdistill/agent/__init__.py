"""Tool-integrated generation: one trajectory's loop (loop), the records it writes (record), the driver
that runs many at once and appends them (driver), its progress display (progress), and one question
streamed from the command line (solve)."""

from dualdistill.agent.driver import run_many
from dualdistill.agent.loop import AgentConfig, run_agent
from dualdistill.agent.record import AgentRecord, read_agent_records

__all__ = ["AgentConfig", "AgentRecord", "read_agent_records", "run_agent", "run_many"]
