"""``python -m dualdistill.cli`` (what ``accelerate launch -m dualdistill.cli train …`` runs)."""

from dualdistill.cli import main

main()
