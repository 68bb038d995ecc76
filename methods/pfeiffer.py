"""Pfeiffer et al. 2020: a bottleneck adapter after the feed-forward block only."""
from peftbench.methods.bottleneck import BottleneckMethod
from peftbench.methods.registry import register


@register("pfeiffer")
class Pfeiffer(BottleneckMethod):
    sites = ("ffn_output",)
