"""Run-to-run spread of demo runs already made: mean ± sample SD of each cell, paired differences with
95% t-intervals, and the targets.

`dualdistill demo --seeds 0,1,2` runs the seeds and prints the same; this reads finished work dirs.

Usage:
    python scripts/demo_spread.py runs/demo-seed0 runs/demo-seed1 runs/demo-seed2
"""

from __future__ import annotations

import sys

from dualdistill.pipeline.demo import spread

if __name__ == "__main__":
    print(spread(sys.argv[1:]))
