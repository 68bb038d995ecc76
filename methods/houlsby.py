"""Houlsby et al. 2019: a bottleneck adapter after attention and after the feed-forward block."""
from peftbench.methods.bottleneck import BottleneckMethod
from peftbench.methods.registry import register


@register("houlsby")
class Houlsby(BottleneckMethod):
    sites = ("attn_output", "ffn_output")
