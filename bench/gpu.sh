#!/usr/bin/env bash
# The generation bench on a CUDA device, both engines: ours (HFBackend) and transformers' continuous
# batching, ~15M-parameter Qwen2 in bf16. Prints one JSON line (the medians). No test depends on this.
#   bash bench/gpu.sh            # on a machine with a GPU and this package installed
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench/gpu.sh: no CUDA device')"
python bench/generation.py --device cuda --size 15m --batch 64 --static-generate --library --repeats 3 \
  | tail -n 1 | python -c "import json, sys, torch; r = json.loads(sys.stdin.read()); r['card'] = torch.cuda.get_device_name(0); print(json.dumps(r))"
