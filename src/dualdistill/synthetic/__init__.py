"""The embedded synthetic math world: problem families, programmatic teachers, the tiny student."""
