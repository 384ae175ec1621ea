"""The teach stage: what a teacher is (protocol), the kinds a recipe can name (kinds: agentic, text,
dataset; tool: native tool calls), how a recipe's ``TeacherSpec`` (spec) becomes one (build), the
stage itself with its records, resume and shard merge (teach), and its cost estimate (cost)."""
