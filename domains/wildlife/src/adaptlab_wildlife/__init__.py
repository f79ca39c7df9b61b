"""adaptlab domain plugin: wildlife image classification.

This module is what discovery imports, so it holds metadata only (no torch). The heavy parts
are named by reference and load when a run uses them.
"""

from adaptlab.plugins.spec import BackboneSpec, DatasetSpec, DomainSpec

_TIMM_ONLINE = {
    # name: (timm id, params in millions) -- the seed paper compares DenseNet, ResNet and VGG
    "resnet50": ("resnet50.a1_in1k", 23.5),
    "densenet121": ("densenet121.tv_in1k", 7.0),
    "vgg16": ("vgg16.tv_in1k", 134.3),
    "convnext_tiny": ("convnext_tiny.fb_in1k", 27.8),
    "vit_small_patch16_224": ("vit_small_patch16_224.augreg_in21k_ft_in1k", 21.7),
}

DOMAIN = DomainSpec(
    name="wildlife",
    title="Wildlife images",
    description="Classify animal photos (species or groups) by adapting ImageNet backbones; "
                "bring camera-trap crops as one folder per species.",
    tasks=("image-classification",),
    datasets=(
        DatasetSpec(name="animals", task="image-classification", source="demo",
                    loader="adaptlab_wildlife.datasets:load_photos",
                    source_dataset="cartoons",
                    description="85 real animal photos (GCompris, CC0/CC-BY/PD) in 5 "
                                "taxonomic classes, unequal in size"),
        DatasetSpec(name="cartoons", task="image-classification", source="demo",
                    loader="adaptlab_wildlife.datasets:load_cartoons",
                    description="42 cartoon drawings of the same 5 classes (Art4Apps, "
                                "CC-BY-SA-3.0): a source domain for cartoon-to-photo transfer"),
    ),
    backbones=(
        BackboneSpec(name="efficientnet_lite0", weights="offline-package",
                     builder="adaptlab.backbones.offline:efficientnet_lite0",
                     params_millions=3.4, input_size=(3, 224, 224),
                     description="ImageNet-1k EfficientNet-Lite0 (ships offline)"),
        *(BackboneSpec(name=name, weights="timm-hub",
                       builder="adaptlab.backbones.timm_backbones:timm_backbone_from_options",
                       params_millions=params, input_size=(3, 224, 224),
                       options={"model_name": timm_id},
                       description=f"timm {timm_id} (downloads when online, or a local file)")
          for name, (timm_id, params) in _TIMM_ONLINE.items()),
    ),
    default_dataset="animals",
    default_backbone="efficientnet_lite0",
    default_strategy="head",
    user_data_loader="adaptlab.data.image_folder:read_image_folder",
    icon="wildlife.svg",
    explain_defaults={"method": "integrated_gradients", "renderer": "image"},
    defaults={"epochs": 10, "batch_size": 16, "lr": 3e-3},
)
