"""Whole runs: the stage manifest and skip rules (stages), recipes (recipe), a recipe's stages (run), the
CPU demo with its controls and budgets (demo) and the paired statistics over seeds (paired)."""
