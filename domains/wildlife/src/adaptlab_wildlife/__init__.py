"""adaptlab domain plugin: wildlife image classification.

This module is what discovery imports, so it holds metadata only (no torch). The heavy parts
are named by reference and load when a run uses them.
"""

from adaptlab.plugins.backbone_specs import efficientnet_lite0_spec, timm_hub_specs
from adaptlab.plugins.spec import DatasetSpec, DomainSpec, package_icon

_TIMM_ONLINE = {
    # name: (timm id, params in millions) -- the seed paper compares DenseNet, ResNet and VGG
    "resnet50": ("resnet50.a1_in1k", 23.5),
    "densenet121": ("densenet121.tv_in1k", 7.0),
    "vgg16": ("vgg16.tv_in1k", 134.3),
    "convnext_tiny": ("convnext_tiny.fb_in1k", 27.8),
    "vit_small_patch16_224": ("vit_small_patch16_224.augreg_in21k_ft_in1k", 21.7),
}

DOMAIN = DomainSpec(
    icon=package_icon(__name__),
    name="wildlife",
    title="Wildlife images",
    description="Classify animal photos (species or groups) by adapting ImageNet backbones; "
                "bring camera-trap crops as one folder per species.",
    tasks=("classification",),
    datasets=(
        DatasetSpec(name="animals", task="classification", modality="image",
                    source="demo", loader="adaptlab_wildlife.datasets:load_photos",
                    licence="public domain, CC0-1.0, CC-BY and CC-BY-SA (Wikimedia Commons "
                            "photos via GCompris), per file in ATTRIBUTION.json",
                    attribution="adaptlab_wildlife:demo_data/ATTRIBUTION.json#photos/",
                    source_dataset="cartoons",
                    description="85 real animal photos (GCompris, CC0/CC-BY/PD) in 5 "
                                "taxonomic classes, unequal in size"),
        DatasetSpec(name="cartoons", task="classification", modality="image",
                    source="demo", loader="adaptlab_wildlife.datasets:load_cartoons",
                    licence="CC-BY-SA-3.0 (Art4Apps drawings via GCompris), per file in "
                            "ATTRIBUTION.json",
                    attribution="adaptlab_wildlife:demo_data/ATTRIBUTION.json#cartoons/",
                    description="42 cartoon drawings of the same 5 classes (Art4Apps, "
                                "CC-BY-SA-3.0): a source domain for cartoon-to-photo transfer"),
    ),
    backbones=(efficientnet_lite0_spec(), *timm_hub_specs(_TIMM_ONLINE)),
    default_dataset="animals",
    default_backbone="efficientnet_lite0",
    seed_paper="*Evaluating Transfer Learning in Deep Learning Models for Classification on a "
               "Custom Wildlife Dataset: Can YOLOv8 Surpass Other Architectures?* freezes "
               "pre-trained DenseNet, ResNet and VGG backbones (and YOLOv8) and trains only a "
               "new fully-connected head. Its headline, 97.39 % accuracy and 96.50 % F1 for "
               "YOLOv8, is a training figure; this template runs the same recipe (`head`) and "
               "reports held-out metrics beside the unadapted model, so the gap shows.",
    default_strategy="head",
    user_data_loader="adaptlab.data.image_folder:read_image_folder",
    predict_reader="adaptlab.predict.image_inputs:read_image_inputs",
    data_help="a folder with one sub-folder of photos (JPEG, PNG, WebP) per species",
    explain_defaults={"method": "integrated_gradients", "renderer": "image"},
    defaults={"epochs": 10, "batch_size": 16, "lr": 3e-3},
)
