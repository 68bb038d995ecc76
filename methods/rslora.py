"""rsLoRA (Kalajdzievski 2023): scaling alpha/sqrt(r) instead of alpha/r, peft's use_rslora flag."""
from methods.lora import LoRA
from methods.registry import register


@register("rslora")
class RSLoRA(LoRA):
    peft_flags = {"use_rslora": True}
