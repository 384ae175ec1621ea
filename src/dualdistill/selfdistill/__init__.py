"""Self-distillation, in its order: sample the student (sample), score each problem (scores), select
and repair by the paper's rule (select) or by strategy (strategy) with teacher solutions
(teacher_solutions), write the set (build), count it (report), retrain (retrain).

The names below are the stage's API (``from dualdistill import selfdistill as sd``)."""

from dualdistill.selfdistill.build import build
from dualdistill.selfdistill.report import load_built, report
from dualdistill.selfdistill.retrain import retrain
from dualdistill.selfdistill.sample import CONFIG_FILE, PROBLEMS_FILE, SAMPLES_FILE, SampleConfig, sample
from dualdistill.selfdistill.scores import ProblemScore, Sample, load_samples
from dualdistill.selfdistill.select import BuildConfig, BuildResult, select
from dualdistill.selfdistill.teacher_solutions import TeacherSolutions

__all__ = ["CONFIG_FILE", "PROBLEMS_FILE", "SAMPLES_FILE", "BuildConfig", "BuildResult", "ProblemScore",
           "Sample", "SampleConfig", "TeacherSolutions", "build", "load_built", "load_samples", "report",
           "retrain", "sample", "select"]  # fmt: skip
