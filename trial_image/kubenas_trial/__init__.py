"""kubenas_trial: the trial-side SDK and PyTorch trainer.

The SDK (this namespace) needs only prometheus-client; the trainer (``python -m kubenas_trial``)
needs torch and scikit-learn and is imported only when run.
"""

from kubenas_trial.sdk import (
    ParametersError,
    TrialReporter,
    checkpoint_dir,
    final_step,
    finish,
    parameters,
    rank,
    report,
)

__all__ = ["ParametersError", "TrialReporter", "checkpoint_dir", "final_step", "finish", "parameters", "rank",
           "report"]
