"""adaptlab domain plugin: medical image classification.

Metadata only (no torch, nibabel or pydicom here): discovery imports this module.
"""

from adaptlab.plugins.backbone_specs import efficientnet_lite0_spec, timm_hub_specs
from adaptlab.plugins.spec import DatasetSpec, DomainSpec, package_icon

_TIMM_ONLINE = {
    "resnet50": ("resnet50.a1_in1k", 23.5),
    "densenet121": ("densenet121.tv_in1k", 7.0),
    "vit_base_patch16_224": ("vit_base_patch16_224.augreg2_in21k_ft_in1k", 85.8),
}

DOMAIN = DomainSpec(
    icon=package_icon(__name__),
    name="medical",
    title="Medical imaging",
    description="Classify medical images (2D images, or 3D volumes slice-wise) from NIfTI, DICOM, "
                "PNG/JPEG folders or MedMNIST .npz files, adapting ImageNet backbones.",
    tasks=("classification",),
    datasets=(
        DatasetSpec(name="brain-regions", task="classification", modality="array-image",
                    source="demo", loader="adaptlab_medical.datasets:load_colin27",
                    licence="BSD-3-Clause (Colin27 and the AAL atlas from Debian's "
                            "mricron-data); cite the AAL atlas (Tzourio-Mazoyer et al. 2002)",
                    attribution="adaptlab_medical:demo_data/SOURCES.json#colin27_aal_patches.npz",
                    source_dataset="brain-regions-icbm152",
                    description="Colin27 T1 MRI, 24 mm axial patches labelled by AAL lobe (6 "
                                "classes); train on the left hemisphere, test on the right"),
        DatasetSpec(name="brain-regions-icbm152", task="classification", modality="array-image",
                    source="demo", loader="adaptlab_medical.datasets:load_icbm152",
                    licence="MNI ICBM 2009a template: free use with its copyright notice (via "
                            "nilearn)",
                    attribution="adaptlab_medical:demo_data/SOURCES.json#icbm152_aal_patches.npz",
                    description="MNI ICBM152 average brain, same patches and labels: a source "
                                "domain (an average of 152 brains, not one scan)"),
    ),
    backbones=(efficientnet_lite0_spec("; grey inputs are repeated to 3 channels from its "
                                       "preprocessing"),
               *timm_hub_specs(_TIMM_ONLINE)),
    default_dataset="brain-regions",
    default_backbone="efficientnet_lite0",
    seed_paper="*DVPT: Dynamic Visual Prompt Tuning of Large Pre-trained Models for Medical "
               "Image Analysis* keeps the backbone frozen and learns a small prompt module: "
               "with 0.5 % extra trainable parameters it reports more than 2.20 % Kappa above "
               "full fine-tuning. This template measures what that method is compared with "
               "(bottom-K freezing, head-only, LoRA, full fine-tuning) on real MRI patches, "
               "with Kappa in every run's metrics; prompt tuning is not yet a strategy here.",
    default_strategy="freeze",
    user_data_loader="adaptlab_medical.readers:read_medical_data",
    predict_reader="adaptlab_medical.predict_inputs:read_scan_inputs",
    data_help="a MedMNIST .npz, or a folder with one sub-folder per class of DICOM files, "
              "NIfTI images/volumes or PNG/JPEG images",
    explain_defaults={"method": "integrated_gradients", "renderer": "image"},
    defaults={"epochs": 8, "batch_size": 32, "lr": 1e-3, "image_size": 64},
)
