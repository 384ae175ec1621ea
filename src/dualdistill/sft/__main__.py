"""``python -m dualdistill.sft train …``: the CLI, as a module ``accelerate launch -m`` can start.

Example: accelerate launch --config_file $(dualdistill config-path fsdp) -m dualdistill.sft train --config sft_r1_distill_qwen7b
"""

from dualdistill.cli import main

if __name__ == "__main__":
    main()
