"""The ground floor: typed configs (config), JSONL records and locks (records), resume identities and
content hashes (resume), and the split of a job into shards with their merge checks (shards).

Nothing here knows a stage; every other package may import it."""
