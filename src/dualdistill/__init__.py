"""dualdistill: DualDistill (Agentic-R1) — distil a tool-using and a text-reasoning teacher into one student."""

__version__ = "0.1.0"
