"""What the stages exchange, as text and as records: trajectories and their tags (trajectory), prompt
templates (prompts), problems and benchmarks (problems), SFT examples (examples) and the teachers' pair
records that composition reads (pairs)."""
