"""DoRA (Liu et al. 2024): weight-decomposed LoRA, peft's use_dora flag."""
from peftbench.methods.lora import LoRA
from peftbench.methods.registry import register


@register("dora")
class DoRA(LoRA):
    peft_flags = {"use_dora": True}
    mixed_batch = False  # peft refuses `adapter_names=` (one adapter per row) when DoRA is enabled
