"""LoRA adapters via peft on any policy's module (the paper: rank 32, alpha 16, all linear layers)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoraSettings:
    r: int = 32
    alpha: int = 16
    dropout: float = 0.0
    # "all-linear" = every nn.Linear except the output head (peft's shorthand), or explicit names.
    target_modules: str | list[str] = "all-linear"
    modules_to_save: list[str] = field(default_factory=list)

    def validate(self):
        if self.r <= 0 or self.alpha <= 0:
            raise ValueError(f"LoRA rank and alpha must be positive, got r={self.r}, alpha={self.alpha}")


def wrap_with_lora(policy, settings: LoraSettings | None = None, adapter_name: str = "default"):
    """Replace ``policy.model`` by a peft LoRA wrapper (base weights frozen); returns the peft model."""
    from peft import LoraConfig, get_peft_model

    settings = settings or LoraSettings()
    settings.validate()
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        modules_to_save=settings.modules_to_save or None,
        bias="none",
    )
    peft_model = get_peft_model(policy.model, config, adapter_name=adapter_name)
    policy.set_model(peft_model)
    return peft_model


def merge_lora(policy) -> None:
    """Fold the adapters into the base weights (for deployment of the small model)."""
    model = policy.model
    if hasattr(model, "merge_and_unload"):
        policy.set_model(model.merge_and_unload())


def trainable_parameter_count(module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    return trainable, total
