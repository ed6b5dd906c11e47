"""Every ```python block of docs/*.md runs, so the documentation cannot drift from the code.

The blocks of one page run in order in one fresh interpreter (a later block may use names an
earlier one defined), in a scratch folder, with the same environment as the notebooks
(no multi-threaded XLA Eigen pool, one BLAS thread; see tests/test_notebooks.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks of a Markdown text, in order."""
    return [m.group(1) for m in FENCE.finditer(text)]


def test_block_extraction():
    text = "a\n```python\nx = 1\n```\n\n```bash\nls\n```\n```python\ny = x\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = x\n"]


def test_every_page_exists_and_the_architecture_page_has_runnable_code():
    names = {p.name for p in DOCS}
    assert {"math.md", "algorithms.md", "architecture.md", "results.md", "glossary.md"} <= names
    arch = python_blocks((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    assert any("Algorithm(" in b for b in arch), "the custom-algorithm example must be executed"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_cpu_multi_thread_eigen")]
    env.update(XLA_FLAGS=" ".join(flags + ["--xla_cpu_multi_thread_eigen=false"]),
               JAX_PLATFORMS="cpu", MPLBACKEND="Agg", OPENBLAS_NUM_THREADS="1",
               OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


@pytest.mark.timeout(240)
@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_python_blocks_run(page, tmp_path):
    blocks = python_blocks(page.read_text(encoding="utf-8"))
    if not blocks:
        return  # a page without code has nothing to run
    script = tmp_path / f"{page.stem}_blocks.py"
    script.write_text("\n\n".join(f"# --- block {i}\n{b}" for i, b in enumerate(blocks)),
                      encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, f"{page.name}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


def test_every_public_module_is_in_the_api_reference():
    """A public module added to the package gets a page: the reference is generated, but which
    modules it covers is listed by hand in docs/api/*.md."""
    listed = set(re.findall(r"^::: (jaxtd[\w.]*)", "\n".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "docs" / "api").glob("*.md")), re.M))
    package = ROOT / "jaxtd"
    public = set()
    for path in package.rglob("*.py"):  # subpackages (algorithms/, lazy/) and their modules
        parts = path.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(part.startswith("_") for part in parts):
            public.add(".".join(("jaxtd",) + parts))
    # the command line is documented in cli.md; lazy_cg is the earlier name of jaxtd.lazy.cg
    missing = sorted(public - listed - {"jaxtd", "jaxtd.cli", "jaxtd.lazy_cg"})
    assert not missing, f"add these modules to a page of docs/api/: {missing}"


@pytest.mark.timeout(300)
def test_api_reference_builds_without_warnings(tmp_path):
    """The site (guides + API reference from the docstrings) builds with warnings as errors: a
    docstring naming an argument the signature lacks, or a broken link, fails here."""
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "--site-dir", str(tmp_path / "site")], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-4000:]
    page = (tmp_path / "site" / "api" / "core" / "index.html").read_text(encoding="utf-8")
    assert 'id="jaxtd.losses.loss"' in page  # the reference really rendered the docstrings


def test_readme_preset_times_quote_the_measurement_file():
    """Every wall time in the README's preset table is the one benchmarks/presets.py measured
    and saved (rewrite with `python benchmarks/presets.py --readme`), as is the sentence that
    says when and under what load."""
    import json
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import presets as bench
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    data = json.loads((ROOT / "benchmarks" / "results" / "presets.json").read_text())
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    cells = bench.readme_cells(readme)
    assert set(cells) == set(data["presets"]), "measure every preset the README lists"
    for name, cell in cells.items():
        assert cell == bench.readme_cell(data["presets"][name]), name
    assert bench.readme_sentence(data) in readme
    assert bench.rewrite_readme(data, readme) == readme


# a duration: "74 s", "2 min 9 s", "19–21 min", "8.5 ms", or spelled out ("about two minutes")
DURATION = re.compile(r"(?<![\w.^-])(\d+(?:\.\d+)?)(?:\s?[–-]\s?\d+(?:\.\d+)?)?\s?"
                      r"(?:ms|s|sec|seconds|min|minutes|h|hours)\b(?!\w)|"
                      r"\b(?:one|two|three|four|five|ten|a few|several|a couple of)\s"
                      r"(?:seconds|minutes|hours)\b", re.I)
MEASUREMENT_FILE = re.compile(r"benchmarks/results/[\w.-]+")


def _help_texts() -> str:
    """Every help text of the ``jaxtd`` command (the parser and each subcommand's)."""
    from jaxtd import cli
    parser = cli.build_parser()
    subs = [a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict)]
    return "\n\n".join([parser.format_help()] + [p.format_help() for a in subs
                                                 for p in a.choices.values()])


def test_every_wall_time_in_the_docs_comes_from_a_measurement_file():
    """README, docs, preset files and `jaxtd ... --help` quote no duration that a benchmark did
    not write: the README's preset cells are checked against presets.json above; any other
    duration must stand in a paragraph that names its file under benchmarks/results/, and that
    file must hold the number. The one setting quoted as a duration (the chunk size's target
    seconds) is checked against the code."""
    from jaxtd import experiment
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import presets as bench
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for cell in bench.readme_cells(readme).values():
        readme = readme.replace(f"| {cell} |", "| |")
    setting = f"~{experiment._SECONDS_PER_CHUNK:g} s of work each"
    sources = {"README.md": readme, "jaxtd --help": _help_texts()}
    sources.update({p.name: p.read_text(encoding="utf-8").replace(setting, "")
                    for p in DOCS + sorted((ROOT / "jaxtd" / "presets").glob("*.toml"))})
    unbacked = []
    for name, text in sources.items():
        for paragraph in re.split(r"\n\s*\n", text):
            files = [ROOT / f for f in MEASUREMENT_FILE.findall(paragraph)]
            measured = " ".join(f.read_text(encoding="utf-8") for f in files if f.is_file())
            for m in DURATION.finditer(paragraph):
                number = m.group(1)
                if number is None or not re.search(rf"(?<![\d.]){re.escape(number)}(?![\d])",
                                                    measured):
                    unbacked.append(f"{name}: {m.group(0)!r} in {paragraph.strip()[:90]!r}")
    assert not unbacked, "durations no benchmark file holds:\n" + "\n".join(unbacked)
