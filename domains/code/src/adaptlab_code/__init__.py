"""adaptlab domain plugin: source code (classification and docstring-to-code retrieval).

Metadata only (no torch or transformers here): discovery imports this module.
"""

from adaptlab.plugins.backbone_specs import hf_hub_specs
from adaptlab.plugins.spec import BackboneSpec, DatasetSpec, DomainSpec, package_icon

_HF_ONLINE = {
    "codebert-base": ("microsoft/codebert-base", 124.6),
    "unixcoder-base": ("microsoft/unixcoder-base", 125.3),
}

DOMAIN = DomainSpec(
    icon=package_icon(__name__),
    name="code",
    title="Source code",
    description="Classify functions (module, topic, defect) or retrieve code from a "
                "natural-language query, adapting a sentence encoder to code.",
    tasks=("classification", "retrieval", "generation"),
    datasets=(
        DatasetSpec(name="stdlib-modules", task="classification", modality="text",
                    source="demo", loader="adaptlab_code.datasets:load_stdlib_modules",
                    licence="PSF-2.0 (the Python standard library's source)",
                    description="930 documented standard-library functions, code without "
                                "docstring, labelled by their module (31 classes)",
                    # strategy_lr: the one rate this set's validation split moved off a
                    # strategy's default with a bracketed gain above the seeds' sd
                    # (BENCHMARKS.md, "Learning rates chosen on validation on the code demo").
                    defaults={"epochs": 5, "lr": 1e-3, "strategy_lr": {"svfit": 0.044}}),
        DatasetSpec(name="docstring-to-code", task="retrieval", modality="text-pairs",
                    source="demo", loader="adaptlab_code.datasets:load_docstring_to_code",
                    licence="PSF-2.0 (Python standard library, training) and MIT (OpenAI's "
                            "HumanEval, test)",
                    description="train on Python standard-library docstring/code pairs, test "
                                "on all 164 HumanEval problems (docstring -> solution)",
                    defaults={"epochs": 2, "lr": 5e-5}),
        DatasetSpec(name="docstring-generation", task="generation", modality="text-to-text",
                    source="demo", loader="adaptlab_code.docstring_data:load_docstring_generation",
                    licence="PSF-2.0 (the Python standard library's source)",
                    description="write a standard-library function's docstring summary from "
                                "its code (930 functions; test modules never seen in training), "
                                "with a small docstring LM the plugin pre-trains and caches",
                    defaults={"epochs": 5, "lr": 3e-3, "batch_size": 16}),
    ),
    backbones=(
        BackboneSpec(name="minilm", weights="offline-package",
                     builder="adaptlab.backbones.hf_encoders:minilm",
                     params_millions=22.7, input_size=(128,),
                     description="all-MiniLM-L6-v2 sentence encoder (ships offline), "
                                 "6 layers, mean-pooled"),
        *hf_hub_specs(_HF_ONLINE),
    ),
    default_dataset="stdlib-modules",
    default_backbone="minilm",
    seed_paper="*Towards Efficient Fine-tuning of Pre-trained Code Models: An Experimental "
               "Study and Beyond* (Telly) finds that only the top two layers of a pre-trained "
               "code model change much during fine-tuning, and freezes the bottom K layers: "
               "far fewer trainable parameters and less time, with similar or better results "
               "(the abstract gives no number). This template runs Telly's freezing (`freeze`, "
               "K on the slider) and compares it with full fine-tuning and LoRA.",
    default_strategy="freeze",
    user_data_loader="adaptlab_code.readers:read_code_data",
    predict_reader="adaptlab_code.predict_inputs:read_code_inputs",
    data_help="a folder with one sub-folder of source files per label, a JSONL of "
              "{code, label} or {query, code} records, or a git working tree",
    explain_defaults={"method": "layer_integrated_gradients", "layer": "embeddings",
                      "renderer": "tokens"},
    defaults={"batch_size": 32, "warmup_ratio": 0.1},
)
