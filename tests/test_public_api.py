import importlib
import pkgutil
import subprocess
import sys

import pytest

import geodistil

# each exported name, and the object it means: (defining module, name there)
MEANT = {
    "DatasetSpec": ("geodistil.data", "DatasetSpec"),
    "GeoDataset": ("geodistil.data", "GeoDataset"),
    "Sample": ("geodistil.data", "Sample"),
    "open_dataset": ("geodistil.data", "open_dataset"),
    "BoxConvention": ("geodistil.config", "BoxConvention"),
    "GenerationConfig": ("geodistil.config", "GenerationConfig"),
    "ImageConfig": ("geodistil.config", "ImageConfig"),
    "RolloutSettings": ("geodistil.config", "RolloutSettings"),
    "TeacherConfig": ("geodistil.config", "TeacherConfig"),
    "ToolsConfig": ("geodistil.config", "ToolsConfig"),
    "Trace": ("geodistil.trace", "Trace"),
    "TraceRecord": ("geodistil.trace", "TraceRecord"),
    "TraceStore": ("geodistil.store", "TraceStore"),
    "RolloutContext": ("geodistil.rollout", "RolloutContext"),
    "run_rollout": ("geodistil.rollout", "rollout"),
    "SampleRange": ("geodistil.generate", "SampleRange"),
    "StorageSpec": ("geodistil.generate", "StorageSpec"),
    "generate_traces": ("geodistil.generate", "generate"),
    "verify_trace": ("geodistil.replay", "verify_trace"),
    "rebuild_images": ("geodistil.replay", "rebuild_images"),
    "parse_answer": ("geodistil.scoring", "parse_answer"),
    "haversine_km": ("geodistil.scoring", "haversine_km"),
    "reward": ("geodistil.scoring", "reward"),
    "summarize": ("geodistil.stats", "summarize"),
    "GeodistilError": ("geodistil.errors", "GeodistilError"),
}


def test_exported_names_are_the_ones_we_mean():
    assert set(geodistil.__all__) == {"__version__", *MEANT}


def test_no_exported_name_is_a_submodule_name():
    # importing geodistil.<name> rebinds the package attribute <name> to the module
    submodules = {m.name for m in pkgutil.iter_modules(geodistil.__path__)}
    assert submodules & set(geodistil.__all__) == set()


@pytest.mark.parametrize("name", sorted(MEANT))
def test_each_exported_name_is_the_object_meant_also_after_its_module_is_imported(name):
    module, attribute = MEANT[name]
    meant = getattr(importlib.import_module(module), attribute)  # the flows import these modules too
    assert getattr(geodistil, name) is meant
    scope: dict = {}
    exec(f"from geodistil import {name}", scope)
    assert scope[name] is meant


def test_each_exported_name_is_the_object_meant_when_read_before_the_modules_are_imported():
    code = (
        "import importlib, sys, geodistil\n"
        f"meant = {MEANT!r}\n"
        "first = {name: getattr(geodistil, name) for name in meant}\n"
        "for name, (module, attribute) in meant.items():\n"
        "    importlib.import_module(module)\n"
        "wrong = [name for name, (module, attribute) in meant.items()\n"
        "         if not (first[name] is getattr(geodistil, name) is getattr(sys.modules[module], attribute))]\n"
        "print(wrong)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_importing_geodistil_loads_no_heavy_dependency():
    code = "import sys, geodistil; print(sorted(m for m in ('prefect', 'datasets', 'openai', 'PIL') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_library_never_imports_prefect():
    import pathlib

    root = pathlib.Path(geodistil.__file__).parent
    offenders = [p for p in root.rglob("*.py")
                 if any(line.lstrip().startswith(("import prefect", "from prefect")) for line in p.read_text().splitlines())]
    assert offenders == []
