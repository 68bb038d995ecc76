"""Which study (conf/study/*.yaml) supplies the data a claim needs: read from the studies' own
`claims:` lists, so a "not enough data" verdict can say what to run."""
from __future__ import annotations

from pathlib import Path

import yaml
from peftbench.experiments import yamlfile
from peftbench.experiments.paths import CONF

STUDY_DIR = CONF / "study"


def studies_for_claim(claim_id: str, folder: Path = STUDY_DIR) -> list[str]:
    names = []
    for path in sorted(Path(folder).glob("*.yaml")):
        try:
            data = yamlfile.read(path) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and claim_id in (data.get("claims") or []):
            names.append(str(data.get("name") or path.stem))
    return names


def study_of_folder(folder_name: str, folder: Path = STUDY_DIR) -> Path | None:
    """The study file a records folder is named after: `NAME`, or `NAME_VARIANT` for a variant
    (the longest study name that fits wins); None when no study fits."""
    for path in sorted(Path(folder).glob("*.yaml"), key=lambda p: -len(p.stem)):
        if folder_name == path.stem or folder_name.startswith(path.stem + "_"):
            return path
    return None


def study_claims(folder_name: str, folder: Path = STUDY_DIR) -> list[str] | None:
    """The claims of the study a records folder is named after (study_of_folder); None when no
    study fits."""
    path = study_of_folder(folder_name, folder)
    if path is None:
        return None
    data = yamlfile.read(path) or {}
    return [str(c) for c in data.get("claims") or []]
