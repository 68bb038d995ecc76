"""`peftbench run`: Hydra's command line behind one-line errors. Unknown group names and keys
are caught before Hydra composes anything, with the name the user probably meant."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from peftbench.experiments.names import did_you_mean
from peftbench.experiments.paths import CONF

GROUPS = ("method", "model", "task", "logger", "sweep", "launcher", "distributed")


def _choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def search_overrides(argv: list[str]) -> list[str]:
    """The one override that gives Hydra the user's config folders: `--config-dir DIR` (or -cd)
    and any `hydra.searchpath=[...]`, combined, so that the name check sees what Hydra will."""
    entries: list[str] = []
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            entries.append(f"file://{Path(argv[i + 1]).expanduser().resolve()}")
        elif arg.startswith("--config-dir="):
            entries.append(f"file://{Path(arg.split('=', 1)[1]).expanduser().resolve()}")
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            entries += [e.strip() for e in arg.split("=", 1)[1].strip("[]").split(",") if e.strip()]
    return [f"hydra.searchpath=[{','.join(entries)}]"] if entries else []


def visible_choices(group: str, argv: list[str]) -> list[str]:
    """The names Hydra can load for `group`: the package's conf/ plus the user's config folders
    (searchpath entries and --config-dir), asked of Hydra itself."""
    extra = search_overrides(argv)
    if not extra:
        return _choices(group)
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group, config_name="config", overrides=extra))


def check_group_choices(overrides: list[str], argv: list[str] | None = None) -> str | None:
    """Unknown method/model/task names get one line here, before Hydra composes anything."""
    argv = overrides if argv is None else argv
    for ov in overrides:
        key, sep, value = ov.partition("=")
        group = key.lstrip("+~")
        if not sep or group not in GROUPS or "(" in value or "*" in value:
            continue
        names = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        known = _choices(group)
        if all(n in known for n in names):
            continue
        known = visible_choices(group, argv)
        for name in names:
            if name not in known:
                if group == "model":  # any hub id or folder runs as it is, without a YAML (conf/model/hf.yaml)
                    near = did_you_mean(name, known, "model=").removeprefix("; did you mean ").removesuffix("?")
                    return (f"unknown model {name!r}; use model=hf model.name={name} (any causal LM; add model.kind=classifier "
                            f"for an encoder){f', or {near}' if near else ''}; or add {name.rsplit('/', 1)[-1]}.yaml under "
                            f"conf/model/ or model/ of your --config-dir DIR; available: {', '.join(known)}")
                return (f"unknown {group} {name!r}{did_you_mean(name, known, f'{group}=')}; available: {', '.join(known)} "
                        f"(add {name}.yaml under conf/{group}/ or under {group}/ in your own config folder, passed with --config-dir DIR)")
    return None


def _chosen(group: str, overrides: list[str]) -> list[str]:
    """The option(s) of a config group this command line picks (its default when none)."""
    for ov in reversed(overrides):
        key, _, value = ov.partition("=")
        if key.lstrip("+~") == group:
            return [v.strip() for v in value.strip("[]").split(",") if v.strip()]
    import yaml

    for entry in yaml.safe_load((CONF / "config.yaml").read_text()).get("defaults", []):
        if isinstance(entry, dict) and group in entry:
            return [str(entry[group])]
    return []


def _keys_at(node: object, path: list[str]) -> list[str] | None:
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return sorted(map(str, node)) if isinstance(node, dict) else None


def missing_key_line(key: str, overrides: list[str]) -> str:
    """`method.r` overridden where the chosen method has no `r`: name the key and what the
    chosen group option (or the top-level config) accepts."""
    import yaml

    head, *rest = key.split(".")
    if head in GROUPS and rest and (CONF / head).is_dir():
        lacking, near = [], ""
        for name in _chosen(head, overrides):
            path = CONF / head / f"{name}.yaml"
            keys = _keys_at(yaml.safe_load(path.read_text()) or {}, rest[:-1]) if path.exists() else None
            if keys is not None and rest[-1] not in keys:
                full = [f"{head}." + ".".join([*rest[:-1], k]) for k in keys]
                near = near or did_you_mean(rest[-1], keys, key.rsplit(".", 1)[0] + ".")
                lacking.append(f"{head} {name} accepts {', '.join(full)}")
        where = "; ".join(lacking) or f"the chosen {head} has no such key"
        return f"{key}: no such key{near} ({where}); to add a key use +{key}=VALUE"
    top = yaml.safe_load((CONF / "config.yaml").read_text()) or {}
    keys = _keys_at(top, key.split(".")[:-1])
    scope = "the config" if "." not in key else key.rsplit(".", 1)[0]
    accepts = f"; {scope} accepts {', '.join(k for k in (keys or []) if k not in ('defaults', 'hydra'))}" if keys else ""
    known = [k for k in keys or [] if k not in ('defaults', 'hydra')]
    near = _group_key_hint(key, overrides) or did_you_mean(key.rsplit(".", 1)[-1], known, key.rsplit(".", 1)[0] + "." if "." in key else "")
    return f"{key}: no such key{near}" \
           f"{accepts}; to add a key use +{key}=VALUE"


def _group_key_hint(key: str, overrides: list[str]) -> str:
    """`r` is a key of the chosen method: `; did you mean method.r?`."""
    import yaml

    if "." in key:
        return ""
    for group in GROUPS:
        for name in _chosen(group, overrides):
            path = CONF / group / f"{name}.yaml"
            if path.exists() and key in (yaml.safe_load(path.read_text()) or {}):
                return f"; did you mean {group}.{key} (a key of {group} {name})?"
    return ""


def hydra_error_line(error: Exception, overrides: list[str]) -> str:
    """Hydra's composition errors as one line: the key, and what the chosen group accepts."""
    from peftbench.methods.base import ConfigError

    if isinstance(error.__cause__, ConfigError):  # raised by our own plugin as Hydra built it
        return str(error.__cause__)
    text = str(error)
    m = re.search(r"Could not override '([^']+)'", text)
    if m:
        return missing_key_line(m.group(1), overrides)
    m = re.search(r"An item is already at '([^']+)'", text)
    if m:
        return f"{m.group(1)}: already exists; override it without the + ({m.group(1)}=VALUE)"
    m = re.search(r"Could not find '([^']+)'.*?Available options in '([^']+)':\n((?:\t[^\n]*\n?)*)", text, re.S)
    if m:
        options = ", ".join(x.strip() for x in m.group(3).splitlines() if x.strip())
        return f"{m.group(2)}: no option {m.group(1).rsplit('/', 1)[-1]!r}; available: {options}"
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    if type(error).__name__ == "OverrideParseException":
        return f"cannot parse the overrides ({first}); write key=value, e.g. steps=100 or method=lora"
    return first


def run_help() -> str:
    import textwrap

    def names(group: str) -> str:  # wrapped under the option's own column
        return textwrap.fill(", ".join(_choices(group)), 99, initial_indent=" " * 19, subsequent_indent=" " * 19).lstrip()
    return f"""usage: peftbench run [-m] [--config-dir DIR] [KEY=VALUE ...]

One run, or with -m a sweep (Hydra multirun: comma-separated values are crossed). Choose each part
by its config group and override any key of the composed config (--cfg job prints it).

groups:
  method=NAME      {names("method")}
  model=NAME       {names("model")}
  task=NAME        {names("task")}
  +sweep=PRESET    with -m: {names("sweep")}
keys (a few):
  steps=N  lr=X  seed=N  batch_size=N  precision=auto|fp32|bf16|fp16  device=auto|cpu|cuda
  method.r=N  method.target_modules=PRESET  results_dir=DIR  measure=quick
options:
  -m, --multirun     sweep every combination of the comma-separated values
  --config-dir DIR   your own config folder: its method/, model/, task/, sweep/ YAMLs beside the package's
  --cfg job          print the composed config and run nothing
  --hydra-help       Hydra's own help
docs: docs/running.md (running), docs/sweeps.md (sweeps and launchers)"""


def run(argv: list[str]) -> int:
    if set(argv) & {"-h", "--help"}:
        print(run_help())
        return 0
    overrides = [a for a in argv if not a.startswith("-")]
    problem = check_group_choices(overrides, argv)
    if problem:
        print(f"peftbench: error: {problem}", file=sys.stderr)
        return 2
    # Hydra then raises its errors instead of printing them, so that they become one line here
    os.environ["HYDRA_FULL_ERROR"] = "1"
    from hydra.errors import HydraException

    from peftbench.experiments.app import main as hydra_main
    from peftbench.methods.base import ConfigError

    sys.argv = ["peftbench run", *argv]
    try:
        hydra_main()
    except HydraException as e:
        print(f"peftbench: error: {hydra_error_line(e, overrides)}", file=sys.stderr)
        return 2
    except ConfigError as e:  # raised before any run started (paths, parallelism)
        print(f"peftbench: error: {e}", file=sys.stderr)
        return 2

    except KeyboardInterrupt:
        print("peftbench: interrupted by SIGINT", file=sys.stderr)
        return 130
    return 0
