"""Pick the task implementation a dataset needs."""

from __future__ import annotations

from adaptlab.data.splits import SplitDataset
from adaptlab.errors import AdaptlabError


def make_task(data: SplitDataset, class_weighting: str = "balanced", backbone=None,
              forecast_loss: str = "quantile"):
    if data.task == "classification":
        from adaptlab.tasks.classification import ClassificationTask, class_weights

        if backbone is not None and backbone.pretrained_head is not None:
            raise AdaptlabError(f"backbone {backbone.name!r} is a forecaster with its own head; "
                                "classification needs a feature backbone")

        weights = class_weights(data.labels("train"), len(data.class_names)) \
            if class_weighting == "balanced" else None
        return ClassificationTask(data.class_names, weights)
    if data.task == "segmentation":
        from adaptlab.tasks.segmentation import SegmentationTask, point_class_weights

        weights = point_class_weights(data, len(data.class_names)) \
            if class_weighting == "balanced" else None
        return SegmentationTask(data.class_names, weights)
    if data.task == "field-regression":
        from adaptlab.tasks.field_regression import FieldRegressionTask

        target = data.samples["train"][0][1]
        return FieldRegressionTask(data.class_names, target.shape, data.coords,
                                   data.task_options.get("residual_channel"))
    if data.task == "retrieval":
        from adaptlab.tasks.retrieval import RetrievalTask

        return RetrievalTask()
    if data.task == "forecasting":
        from adaptlab.tasks.forecasting import ForecastingTask

        if backbone is None or backbone.series is None:
            raise AdaptlabError("forecasting needs a forecasting backbone (one with a series "
                                "preprocessing and a pre-trained head)")
        horizon = data.samples["train"][0][0].horizon
        return ForecastingTask(backbone.series.quantiles, horizon, forecast_loss)
    raise AdaptlabError(f"no task implementation for {data.task!r}")
