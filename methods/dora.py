"""DoRA (Liu et al. 2024): weight-decomposed LoRA, peft's use_dora flag."""
from methods.lora import LoRA
from methods.registry import register


@register("dora")
class DoRA(LoRA):
    peft_flags = {"use_dora": True}
