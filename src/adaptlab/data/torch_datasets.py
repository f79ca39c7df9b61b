"""Turn a split's samples into a torch Dataset with the backbone's preprocessing.

One builder per modality; domains with a new modality register theirs here.
"""

from __future__ import annotations

from collections.abc import Callable

from adaptlab.backbones.backbone import Backbone
from adaptlab.data.splits import SplitDataset
from adaptlab.errors import AdaptlabError

_BUILDERS: dict[str, Callable] = {}


def register_modality(name: str):
    def decorate(builder: Callable) -> Callable:
        _BUILDERS[name] = builder
        return builder

    return decorate


@register_modality("image")
def _image_dataset(samples, backbone: Backbone, train: bool, options: dict):
    from adaptlab.data.image_folder import ImageSampleDataset
    from adaptlab.data.image_transforms import image_transforms

    transform = image_transforms(backbone.preprocessing, train=train,
                                 size=options.get("image_size"))
    return ImageSampleDataset(samples, transform, seed=options.get("seed") if train else None)


@register_modality("array-image")
def _array_image_dataset(samples, backbone: Backbone, train: bool, options: dict):
    from adaptlab.data.array_images import ArrayImageDataset

    return ArrayImageDataset(samples, backbone.preprocessing, train,
                             size=options.get("image_size"), seed=options.get("seed"))


@register_modality("field")
def _field_dataset(samples, backbone: Backbone, train: bool, options: dict):
    from adaptlab.data.fields import FieldDataset, is_periodic

    return FieldDataset(samples, train, seed=options.get("seed"),
                        periodic=is_periodic(options.get("coords") or {}),
                        render=backbone.preprocessing, size=options.get("image_size"),
                        coords=options.get("coords"))


def _point_dataset(samples, backbone: Backbone, train: bool, options: dict,
                   segmentation: bool):
    from adaptlab.data.points import PointCloudDataset, check_point_counts

    if backbone.num_points is None:
        raise AdaptlabError(f"backbone {backbone.name!r} does not read point clouds")
    check_point_counts(samples, backbone.num_points, "train" if train else "evaluation")
    return PointCloudDataset(samples, backbone.num_points, train, seed=options.get("seed"),
                             segmentation=segmentation)


@register_modality("points")
def _point_cloud_dataset(samples, backbone: Backbone, train: bool, options: dict):
    return _point_dataset(samples, backbone, train, options, segmentation=False)


@register_modality("point-segments")
def _point_segment_dataset(samples, backbone: Backbone, train: bool, options: dict):
    return _point_dataset(samples, backbone, train, options, segmentation=True)


@register_modality("text")
def _text_dataset(samples, backbone: Backbone, train: bool, options: dict):
    from adaptlab.data.text import TextDataset

    return TextDataset(samples, backbone.tokenizer, backbone.max_length)


@register_modality("text-pairs")
def _text_pair_dataset(samples, backbone: Backbone, train: bool, options: dict):
    from adaptlab.data.text import TextPairDataset

    return TextPairDataset(samples, backbone.tokenizer, backbone.max_length)


def _check_series_backbone(backbone: Backbone) -> None:
    if backbone.series is None:
        raise AdaptlabError(f"backbone {backbone.name!r} does not read time series")
    if backbone.series.scaling != "minmax":  # the one scaling the series datasets apply
        raise AdaptlabError(f"backbone {backbone.name!r} expects {backbone.series.scaling!r} "
                            "scaling; series datasets scale by min-max")


@register_modality("series-windows")
def _series_window_dataset(samples, backbone: Backbone, train: bool, options: dict):
    from adaptlab.data.series import SeriesWindowDataset

    _check_series_backbone(backbone)
    return SeriesWindowDataset([window for window, _ in samples], backbone.series.context_length)


@register_modality("series-labelled")
def _labelled_series_dataset(samples, backbone: Backbone, train: bool, options: dict):
    from adaptlab.data.series import LabelledSeriesDataset

    _check_series_backbone(backbone)
    return LabelledSeriesDataset(samples, backbone.series.context_length)


def make_torch_dataset(data: SplitDataset, split: str, backbone: Backbone, train: bool,
                       options: dict | None = None):
    if data.modality not in _BUILDERS:
        raise AdaptlabError(f"no dataset builder for modality {data.modality!r}")
    options = {**(options or {}), "coords": data.coords}
    return _BUILDERS[data.modality](data.samples[split], backbone, train, options)
