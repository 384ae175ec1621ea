"""The compose stage: grade the pairs and join them by the paper's four cases, then clean, decontaminate
(decontam) and balance (run); the single-teacher and union sets of the controls (singles)."""
