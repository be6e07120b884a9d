"""Stage steps the notebooks call, one module per stage (``setup`` 00, ``sampling`` 01, ``sft`` 02, ``grpo`` 03,
``evaluation`` 04-05, ``diagnostics`` 06 and claim C5, ``open_questions`` 07, ``experiments`` 08 and its
``experiment_readouts`` and ``policy_readouts``; what they share is in ``queries``). Each reads earlier stages'
artifacts from the run directory and writes its own; the notebooks narrate and show. Only entry points (``launch``)
import this package; the modules it builds on never do."""
from . import (diagnostics, evaluation, experiment_readouts, experiments, grpo, open_questions,  # noqa: F401
               policy_readouts, sampling, second_truth, setup, sft)
