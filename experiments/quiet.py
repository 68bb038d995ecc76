"""Silence third-party chatter that is expected and says nothing about the run."""
import logging
import os
import sys
import warnings


def quiet() -> None:
    # bitsandbytes tries to fetch a CPU kernel through the `kernels` package (not installed, so
    # nothing is downloaded) and warns at import.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # datasets' "Generating train split" bars would bury a one-line error on stderr; our own
    # progress line says what a run is doing
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    # transformers reads these when it is imported: a command that never loads a model (report,
    # `reproduce --list`, a refused config) then does not import it (about 1 s) only to quiet it.
    # A user's own TRANSFORMERS_VERBOSITY wins.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported before reading them: tell it what they say
        from transformers.utils import logging as hf_logging

        if os.environ["TRANSFORMERS_VERBOSITY"] == "error":
            hf_logging.set_verbosity_error()
        if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
            hf_logging.disable_progress_bar()
