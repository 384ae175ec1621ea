"""Grading a response against a gold answer: exact fast paths, then math-verify in worker processes with a
hard deadline (grader); exact rational arithmetic for the fast paths (rationals).

``grade``, ``grade_many``, ``answers_match`` and ``Verdict`` are the public names."""

from dualdistill.grading.grader import Verdict, answers_match, grade, grade_many

__all__ = ["Verdict", "answers_match", "grade", "grade_many"]
