"""LoRA (and DoRA) through peft: low-rank updates ``B A`` beside the frozen weights.

``init`` chooses peft's data-free initialisations: ``default`` (B = 0, the adapter starts as
a no-op), ``gaussian``, ``orthogonal``, and the two that move the principal part of each
weight into the adapter, ``pissa`` (its top-r singular triplets) and ``olora`` (its QR
factors). Those two rewrite the base weights to the residual ``W - B A``: the adapters-off
model is then not the pre-trained one, and a reload rebuilds the same residual by running the
same deterministic decomposition on the pre-trained weights again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from adaptlab.errors import AdaptlabError
from adaptlab.strategies.peft_family.base import PeftStrategy, PeftStrategyConfig
from adaptlab.strategies.registry import register_strategy

# peft 0.21's LoRA dispatch: Linear, Conv1d/2d/3d and Embedding (grouped convs left out).
LORA_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)

# ``init`` values -> peft's ``init_lora_weights``; only those that need no data (EVA and
# CorDA read activations, LoftQ quantises).
LORA_INITS = {"default": True, "gaussian": "gaussian", "orthogonal": "orthogonal",
              "pissa": "pissa", "olora": "olora"}
# Initialisations that rewrite the base weights to a residual.
BASE_REWRITING_INITS = ("pissa", "olora")


@dataclass
class LoraStrategyConfig(PeftStrategyConfig):
    r: int = field(default=8, metadata={"min": 1, "max": 1024, "help": "LoRA rank"})
    alpha: float = field(default=16.0, metadata={"min": 1e-6, "max": 1e6,
                                                  "help": "LoRA scaling numerator (alpha / r)"})
    dropout: float = field(default=0.0, metadata={"min": 0.0, "max": 0.95})
    use_dora: bool = field(default=False, metadata={"help": "weight-decomposed LoRA (DoRA)"})
    init: str = field(default="default", metadata={
        "choices": tuple(LORA_INITS),
        "help": "adapter initialisation; pissa/olora move the weights' principal part into it"})


@register_strategy
class LoraStrategy(PeftStrategy):
    name = "lora"
    shards = True
    config_class = LoraStrategyConfig
    description = "low-rank adapters (peft) on the backbone's blocks; head and BatchNorm saved"
    layer_types = LORA_LAYER_TYPES
    # Adapters from zero beside frozen weights train at rates far above full fine-tuning's
    # (LoRA and its vision follow-ups use 1e-4 .. 5e-3). 3e-3 against 1e-3 on the code demo
    # (MiniLM, 256 training samples, 3 epochs, seed 0): validation accuracy 0.435 against
    # 0.247; the demos' benchmarks ran LoRA at 3e-3 on four of six domains.
    default_lr = 3e-3
    lr_range = (1e-5, 5e-2)

    def __init__(self, config: LoraStrategyConfig) -> None:
        super().__init__(config)
        # An instance attribute: whether adapters-off is the pre-trained model depends on init.
        self.base_untouched = config.init not in BASE_REWRITING_INITS

    def check_plan(self, model: nn.Module, targets: list[str]) -> None:
        modules = dict(model.named_modules())
        if self.config.use_dora and any(isinstance(modules[t], nn.Conv1d | nn.Conv3d)
                                        for t in targets):
            raise AdaptlabError("strategy 'lora': use_dora=true supports Linear, Conv2d and "
                                "Embedding only; this plan targets Conv1d/Conv3d layers")
        if self.config.init in BASE_REWRITING_INITS:
            # peft decomposes the 2-D weight of a Linear layer only.
            other = next((t for t in targets if not isinstance(modules[t], nn.Linear)), None)
            if other is not None:
                raise AdaptlabError(
                    f"strategy 'lora': init={self.config.init} decomposes Linear weights only; "
                    f"target {other!r} is a {type(modules[other]).__name__} (set targets to "
                    "Linear layers, or init=default)")

    def method_config(self, model: nn.Module, plan: dict[str, list[str]]):
        from peft import LoraConfig

        return LoraConfig(r=self.config.r, lora_alpha=self.config.alpha,
                          lora_dropout=self.config.dropout, use_dora=self.config.use_dora,
                          init_lora_weights=LORA_INITS[self.config.init],
                          target_modules=plan["target_modules"],
                          modules_to_save=plan["modules_to_save"])
