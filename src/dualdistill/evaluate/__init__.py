"""The eval stage: pass@k, maj@k and intervals (metrics), the report and its plot (report), and the run
with its config, resume and shard merge (run)."""
