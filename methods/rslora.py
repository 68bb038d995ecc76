"""rsLoRA (Kalajdzievski 2023): scaling alpha/sqrt(r) instead of alpha/r, peft's use_rslora flag."""
from peftbench.methods.lora import LoRA
from peftbench.methods.registry import register


@register("rslora")
class RSLoRA(LoRA):
    peft_flags = {"use_rslora": True}
