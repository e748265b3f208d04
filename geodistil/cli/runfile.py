"""``geodistil run``'s settings: a run file (``--config run.yaml``) with the flags laid over it.

The run file holds the generation flow's parameters, by the flow's names::

    dataset: out/demo-data          # or {path: ..., split: ..., image_column: ...}
    output: s3://bucket/traces
    samples: {start: 0, num_samples: 1000}
    teacher: {base_url: http://gpu:8000/v1, model: Qwen/Qwen2.5-VL-7B-Instruct, profile: vllm}
    generation: {max_tokens: 1024, temperature: 0.6, chat_template_kwargs: {enable_thinking: false}}
    tools: {enabled: [image_zoom_in_tool], max_images: 8}
    image: {max_pixels: 1003520, image_format: jpeg, jpeg_quality: 90}
    chunk_size: 1000

A flag given on the command line wins over the file; a setting neither gives takes its
default from the pydantic model that declares it (``geodistil.config``), never from here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from geodistil.config import ENV_PREFIX, is_literal_secret
from geodistil.errors import ConfigError

SECTIONS = ("teacher", "generation", "tools", "image", "samples")
TOP_LEVEL = ("dataset", "output", "chunk_size", "refresh", *SECTIONS)


def _merge(base: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        base = base.setdefault(key, {})
        if not isinstance(base, dict):
            raise ConfigError(f"run file: {key} must be a mapping")
    base[leaf] = value


def read_run_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"run file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"run file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"run file {path}: expected a mapping of settings")
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"run file {path}: unknown setting {unknown[0]!r}; known: {', '.join(TOP_LEVEL)}")
    return data


def secrets_to_env(mapping: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``mapping`` with every literal secret-looking value moved into this process's environment
    (``env:GEODISTIL_<PREFIX>_<NAME>``), so that it reaches the client but no parameter, log or trace."""
    out = {}
    for name, value in mapping.items():
        if is_literal_secret(name, value):
            variable = f"GEODISTIL_{prefix}_" + re.sub(r"\W", "_", name).upper()
            os.environ[variable] = str(value)
            value = ENV_PREFIX + variable
        out[name] = value
    return out


_SECTION_OF = {"TeacherConfig": "teacher", "GenerationConfig": "generation", "ToolsConfig": "tools",
               "ImageConfig": "image", "SampleRange": "samples", "DatasetSpec": "dataset"}


def _one_line(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in (_SECTION_OF.get(exc.title, exc.title), *error["loc"]))
    return f"{where}: {error['msg']}"


def run_params(config_file: Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    """The flow's parameters from the run file and the flags given (``{"teacher.model": ...}``,
    None for a flag not given); ``ConfigError`` with one line naming the bad setting."""
    from geodistil.config import GenerationConfig, ImageConfig, TeacherConfig, ToolsConfig
    from geodistil.data import DatasetSpec
    from geodistil.store import SampleRange

    from geodistil.cli._app import storage_spec

    data = read_run_file(config_file) if config_file is not None else {}
    for path, value in flags.items():
        if value is not None:
            _merge(data, path, value)
    if data.get("dataset") is None:
        raise ConfigError("--dataset is required (or use --demo, or set dataset in the run file)")
    for name in SECTIONS:
        if not isinstance(data.get(name) or {}, dict):
            raise ConfigError(f"{name} must be a mapping of settings")
    teacher = dict(data.get("teacher") or {})
    if isinstance(teacher.get("headers"), dict):
        teacher["headers"] = secrets_to_env({str(k): str(v) for k, v in teacher["headers"].items()}, "HEADER")
    if isinstance(teacher.get("extra_body"), dict):
        teacher["extra_body"] = secrets_to_env(teacher["extra_body"], "BODY")
    dataset = data["dataset"]
    try:
        params: dict[str, Any] = dict(
            dataset=DatasetSpec(path=dataset) if isinstance(dataset, str) else DatasetSpec(**dataset),
            storage=storage_spec(data["output"]) if data.get("output") else storage_spec(_default_output()),
            samples=SampleRange(**(data.get("samples") or {})),
            teacher=TeacherConfig(**teacher),
            generation=GenerationConfig(**(data.get("generation") or {})),
            tools=ToolsConfig(**(data.get("tools") or {})),
            image=ImageConfig(**(data.get("image") or {})),
        )
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from exc
    params.update({k: data[k] for k in ("chunk_size", "refresh") if data.get(k) is not None})
    return params


def _default_output() -> str:
    from geodistil.store import StorageSpec

    return str(StorageSpec.model_fields["url"].default)
