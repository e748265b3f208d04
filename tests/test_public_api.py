import subprocess
import sys

import geodistil


def test_exported_names_are_the_ones_we_mean():
    assert set(geodistil.__all__) == {
        "__version__", "DatasetSpec", "GeoDataset", "Sample", "open_dataset", "BoxConvention",
        "GenerationConfig", "ImageConfig", "RolloutSettings", "TeacherConfig", "ToolsConfig", "Trace",
        "TraceRecord", "TraceStore", "RolloutContext", "rollout", "SampleRange", "StorageSpec", "generate",
        "verify_trace", "rebuild_images", "parse_answer", "haversine_km", "reward", "summarize",
        "GeodistilError",
    }
    for name in geodistil.__all__:
        assert getattr(geodistil, name) is not None


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
