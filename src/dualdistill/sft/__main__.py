"""``python -m dualdistill.sft train …``: the CLI, as a module ``accelerate launch -m`` can start.

Example: accelerate launch --config_file recipes/accelerate/fsdp.yaml -m dualdistill.sft train --config recipes/sft_r1_distill_qwen7b.yaml
"""

from dualdistill.cli import main

if __name__ == "__main__":
    main()
