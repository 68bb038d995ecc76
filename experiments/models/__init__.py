"""Where weights come from (bundled package, hub id, local folder, tiny built-in Llama)."""
from peftbench.experiments.models.loader import build_model_info, load_model, load_tokenizer, model_path

__all__ = ["build_model_info", "load_model", "load_tokenizer", "model_path"]
