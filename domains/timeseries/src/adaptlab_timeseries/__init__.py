"""adaptlab domain plugin: time-series forecasting.

Metadata only (no torch, pandas or xarray here): discovery imports this module.
"""

from adaptlab.plugins.spec import BackboneSpec, DatasetSpec, DomainSpec, package_icon

DOMAIN = DomainSpec(
    icon=package_icon(__name__),
    name="timeseries",
    title="Time series",
    description="Forecast or classify series from CSV, Parquet, NetCDF or UCR/UEA files, adapting a "
                "pre-trained forecaster; forecasts are evaluated walk-forward against seasonal "
                "naive (MAE, RMSE, MASE).",
    tasks=("forecasting", "classification"),
    datasets=(
        DatasetSpec(name="cmip6-arctic", task="forecasting", modality="series-windows",
                    source="demo", loader="adaptlab_timeseries.datasets:load_cmip6_arctic",
                    licence="CC-BY-SA-4.0 per CMIP6 model (ESMValTool sample data); the CMIP6 "
                            "terms of use ask for citation",
                    attribution="adaptlab_timeseries:demo_data/SOURCES.json#cmip6_arctic_ta_monthly.csv.gz",
                    description="monthly Arctic air temperature from 41 CMIP6 climate models; "
                                "forecast 24 months of a held-out model (MIROC6), trained on "
                                "the others, walk-forward over its last 10 years",
                    defaults={"epochs": 3, "lr": 3e-4, "train_samples": 512}),
        DatasetSpec(name="co2", task="forecasting", modality="series-windows",
                    source="demo", loader="adaptlab_timeseries.datasets:load_co2",
                    licence="public domain (Scripps Mauna Loa record, via statsmodels' "
                            "datasets)",
                    attribution="adaptlab_timeseries:demo_data/SOURCES.json#co2_weekly.csv",
                    description="Mauna Loa weekly CO2, 1965-2001: one series, forecast 26 "
                                "weeks, trained on its own earlier years (few-shot)",
                    defaults={"epochs": 3, "lr": 3e-4, "train_samples": 256}),
        DatasetSpec(name="elnino", task="forecasting", modality="series-windows",
                    source="demo", loader="adaptlab_timeseries.datasets:load_elnino",
                    licence="public domain (NOAA ERSST, via statsmodels' datasets)",
                    attribution="adaptlab_timeseries:demo_data/SOURCES.json#elnino_monthly.csv",
                    description="Nino 1+2 monthly sea-surface temperature, 1950-2010: forecast "
                                "12 months",
                    defaults={"epochs": 3, "lr": 3e-4}),
        DatasetSpec(name="sunspots", task="forecasting", modality="series-windows",
                    source="demo", loader="adaptlab_timeseries.datasets:load_sunspots",
                    licence="public domain (NOAA NGDC, via statsmodels' datasets)",
                    attribution="adaptlab_timeseries:demo_data/SOURCES.json#sunspots_yearly.csv",
                    description="yearly sunspot numbers, 1700-2008: forecast 11 years",
                    defaults={"epochs": 3, "lr": 3e-4}),
        DatasetSpec(name="nile", task="forecasting", modality="series-windows",
                    source="demo", loader="adaptlab_timeseries.datasets:load_nile",
                    licence="public domain (via statsmodels' datasets)",
                    attribution="adaptlab_timeseries:demo_data/SOURCES.json#nile_yearly.csv",
                    description="yearly Nile flow at Aswan, 1871-1970: forecast 10 years",
                    defaults={"epochs": 3, "lr": 3e-4}),
        DatasetSpec(name="cmip6-warming", task="classification", modality="series-labelled",
                    source="demo", loader="adaptlab_timeseries.datasets:load_cmip6_warming",
                    licence="CC-BY-SA-4.0 per CMIP6 model (ESMValTool sample data); the CMIP6 "
                            "terms of use ask for citation",
                    attribution="adaptlab_timeseries:demo_data/SOURCES.json#cmip6_arctic_ta_monthly.csv.gz",
                    backbone="fracast-features",
                    description="20-year Arctic temperature records, early industrial "
                                "(1850-1899) or recent (1965-2014)? Trained on 9 CMIP6 models, "
                                "tested on a held-out one (CanESM5)",
                    defaults={"epochs": 3, "lr": 3e-4, "train_samples": 256}),
    ),
    backbones=(
        BackboneSpec(name="fracast", weights="offline-package",
                     builder="adaptlab.backbones.fracast:fracast", params_millions=0.085,
                     input_size=(2048,),
                     description="Fracast-0 dilated-conv forecaster (ships offline): context "
                                 "2048 steps, 48-step horizon, 9 quantiles"),
        BackboneSpec(name="fracast-features", weights="offline-package",
                     builder="adaptlab.backbones.fracast:fracast_features",
                     params_millions=0.026, input_size=(2048,),
                     description="Fracast-0's encoder as a feature extractor for series "
                                 "classification (mean and last hidden state, 128 features)"),
    ),
    default_dataset="cmip6-arctic",
    default_backbone="fracast",
    seed_paper="*Tiny Time Mixers (TTMs): Fast Pre-trained Models for Enhanced Zero/Few-Shot "
               "Forecasting of Multivariate Time Series* shows that a pre-trained forecaster "
               "under 1 M parameters, used zero-shot or fine-tuned on a few samples, beats "
               "larger models by 12-38 %. This template adapts Fracast-0, a small pre-trained "
               "forecaster of that kind, and reports the pre-trained model zero-shot beside "
               "the adapted one, both against seasonal naive (MASE).",
    default_strategy="full",
    user_data_loader="adaptlab_timeseries.datasets:read_series_data",
    predict_reader="adaptlab_timeseries.predict_inputs:read_prediction_series",
    data_help="a CSV or Parquet table with a time column and value columns, a NetCDF file "
              "with a time dimension, or a folder of them; to classify, class folders of "
              "them or UCR/UEA cases (.ts, .arff, .npz; NAME_TRAIN with NAME_TEST)",
    template_cells=(
        ("markdown", "## The walk-forward split\n\nEach series' last span is the test period "
                     "and the span before it validation; no training window forecasts a step "
                     "inside them. Series with gaps longer than the gap rule fills are listed "
                     "as refused."),
        ("code", "from adaptlab.plugins.registry import get_domain\n"
                 "from adaptlab.assembly import load_data\n\n"
                 "data = load_data(view.config, get_domain(DOMAIN))\n"
                 "print('windows per split:', data.counts())\n"
                 "print('first test window:', data.samples['test'][0][0].describe())\n"
                 "print(len(data.skipped), 'series refused;', len(data.notes), 'repaired')"),
    ),
    explain_defaults={"method": "integrated_gradients", "renderer": "series",
                      "target": "median forecast"},
    defaults={"batch_size": 32, "warmup_ratio": 0.1, "weight_decay": 0.0},
)
