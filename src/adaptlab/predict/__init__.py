"""The adapted model applied to new data: ``adaptlab predict`` and ``LoadedRun.predict``.

A domain reads new inputs (:class:`PredictionInputs`, from its ``predict_reader``); the run's
own preprocessing turns them into tensors (the modality's dataset builder, evaluation mode);
the task's writer (``Task.prediction_writer``) turns outputs into rows and files.
"""

from adaptlab.predict.inputs import PredictionInputs
from adaptlab.predict.writer import Predictions, PredictionWriter

__all__ = ["PredictionInputs", "PredictionWriter", "Predictions"]
