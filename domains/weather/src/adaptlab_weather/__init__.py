"""adaptlab domain plugin: weather and climate fields. Metadata only: no torch import."""

from adaptlab.plugins.backbone_specs import efficientnet_lite0_spec
from adaptlab.plugins.spec import BackboneSpec, DatasetSpec, DomainSpec, package_icon

HISTORY = 3  # days per sample, as channels: day t-2, t-1, t (the datasets import it)

DOMAIN = DomainSpec(
    icon=package_icon(__name__),
    name="weather",
    title="Weather and climate fields",
    description="Classify events from gridded fields (blocking-like persistent highs) and "
                "predict fields from fields (next year's temperature map), with networks "
                "pre-trained on a simulator or another climate scenario, then adapted to "
                "scarcer target fields; always beside the control trained on the target alone.",
    tasks=("classification", "field-regression"),
    datasets=(
        DatasetSpec(name="blocking-observed", task="classification", modality="field",
                    description="1,000 days of a shifted flow (slower waves, weaker longer "
                                "blocks, noisier smoothed fields) standing in for observations; "
                                "label: a block now still present in 5 days",
                    loader="adaptlab_weather.datasets:blocking_observed",
                    source_dataset="blocking-simulated",
                    defaults={"epochs": 15, "lr": 3e-3, "batch_size": 32}),
        DatasetSpec(name="blocking-simulated", task="classification", modality="field",
                    description="2,400 days of the plugin's idealised mid-latitude flow "
                                "(Rossby-like waves, travelling ridges, blocks), same label",
                    loader="adaptlab_weather.datasets:blocking_simulated",
                    defaults={"epochs": 10, "lr": 3e-3, "batch_size": 64}),
        DatasetSpec(name="scenario-e1", task="field-regression", modality="field",
                    description="next year's surface air temperature anomaly map over North "
                                "America from the last 3 years', Met Office UM scenario E1 "
                                "after 2000 (96 samples); 37 x 49 grid, latitude-weighted",
                    loader="adaptlab_weather.scenarios:scenario_e1",
                    source_dataset="scenario-a1b", backbone="field_unet",
                    defaults={"epochs": 15, "lr": 1e-3, "batch_size": 8}),
        DatasetSpec(name="scenario-a1b", task="field-regression", modality="field",
                    description="the same task in scenario A1B, 1860-2099 (236 samples), "
                                "which warms twice as fast after 2000",
                    loader="adaptlab_weather.scenarios:scenario_a1b", backbone="field_unet",
                    defaults={"epochs": 10, "lr": 1e-3, "batch_size": 16}),
    ),
    backbones=(
        BackboneSpec(name="field_cnn", description="small CNN for (days, lat, lon) fields, "
                                                   "circular in longitude; built in, trained "
                                                   "from scratch or from a source run",
                     builder="adaptlab.backbones.field_cnn:field_cnn", weights="local-file",
                     params_millions=0.05, input_size=(HISTORY, 16, 32),
                     options={"in_channels": HISTORY}),
        BackboneSpec(name="field_unet", description="small U-Net for field-to-field "
                                                    "regression on the input grid (any size); "
                                                    "built in",
                     builder="adaptlab.backbones.field_unet:field_unet", weights="local-file",
                     params_millions=0.17, input_size=(HISTORY, 37, 49),
                     options={"in_channels": HISTORY}),
        efficientnet_lite0_spec("; reads fields rendered as images (the 3 days as red, "
                                "green and blue)"),
    ),
    default_dataset="blocking-observed",
    default_backbone="field_cnn",
    default_strategy="full",
    seed_paper=("*Using Explainable AI and Transfer Learning to understand and predict the "
                "maintenance of Atlantic blocking with limited observational data* trains a CNN "
                "on an idealised quasi-geostrophic model (Marshall and Molteni), then transfers "
                "it to ERA5 reanalysis, where data are too scarce to train directly, and "
                "compares SHAP maps before and after transfer. It states no headline number: "
                "its claim is that transfer beats direct training. This template runs the "
                "same recipe offline on the plugin's own idealised flow (a simpler model than "
                "Marshall-Molteni) and a shifted version of it standing in for reanalysis; "
                "`adaptlab transfer weather` draws the learning curve against the "
                "target-only control."),
    explain_defaults={"method": "integrated_gradients", "renderer": "field"},
    user_data_loader="adaptlab_weather.readers:read_event_fields",
    data_help="a NetCDF file or Zarr store with one (time, lat, lon) field and a 0/1 'label' "
              "per time step",
)
