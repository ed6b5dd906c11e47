"""The package layout: public names are what they say (functions, not modules of the same name)."""

import inspect
import sys

import jaxtd
from jaxtd import algorithms


def test_functions_are_not_shadowed_modules():
    for fn in (jaxtd.run, jaxtd.sweep, jaxtd.simulate, algorithms.gd, algorithms.variant,
               algorithms.deflation, algorithms.lazy_gd):
        assert inspect.isfunction(fn), fn
    for name in ("jaxtd.run", "jaxtd.sweep", "jaxtd.algorithms.gd", "jaxtd.algorithms.variant",
                 "jaxtd.algorithms.deflation", "jaxtd.algorithms.lazy_gd"):
        assert name not in sys.modules, name


def test_state_types_and_helpers_are_reexported():
    key = jaxtd.key_for_seed(0)
    target = jaxtd.targets.orthonormal(key, 4, 2, 3)
    for ctor, state_type in ((algorithms.gd, algorithms.GDState),
                             (algorithms.variant, algorithms.VariantState),
                             (algorithms.deflation, algorithms.DeflationState),
                             (algorithms.lazy_gd, algorithms.LazyGDState)):
        assert isinstance(ctor().init(key, target, 3), state_type)
    for name in jaxtd.__all__ + [f"algorithms.{n}" for n in algorithms.__all__]:
        obj = jaxtd
        for part in name.split("."):
            obj = getattr(obj, part)


def test_no_algorithm_module_imports_another():
    """Shared plumbing lives in algorithms/base.py; siblings do not import each other."""
    import pathlib
    folder = pathlib.Path(algorithms.__file__).parent
    for path in (p for p in folder.glob("_*.py") if p.name != "__init__.py"):
        text = path.read_text()
        for other in ("_gd", "_variant", "_deflation", "_lazy_gd"):
            if other != path.stem:
                assert f"jaxtd.algorithms.{other}" not in text, (path.name, other)


def _imports(path) -> set:
    """Every module a file imports, function-local imports included."""
    import ast
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def test_runner_and_gd_sit_below_what_they_run():
    """The runner knows algorithms by their interface only (a state may offer
    ``with_init_params``); gradient descent takes its initializations from
    ``jaxtd.initialization``, not from the lazy module above it."""
    import pathlib
    root = pathlib.Path(jaxtd.__file__).parent
    run_imports = _imports(root / "_run.py")
    assert not [m for m in run_imports if m.startswith("jaxtd.algorithms._")], run_imports
    for name in ("_gd.py", "_lazy_gd.py"):
        gd_imports = _imports(root / "algorithms" / name)
        assert "jaxtd.lazy" not in gd_imports or name == "_lazy_gd.py", (name, gd_imports)
    assert not [m for m in _imports(root / "initialization.py") if "lazy" in m or "algorithms" in m]


def test_the_lazy_model_never_imports_the_algorithms():
    """Layers point down: the lazy package (model, optimum, CG, threshold, training) and the
    optimizer plumbing sit below the algorithms (lazy GD takes its one update from
    ``jaxtd.lazy.lazy_update``); none of them imports ``jaxtd.algorithms``, not even inside a
    function."""
    import pathlib
    root = pathlib.Path(jaxtd.__file__).parent
    package = sorted((root / "lazy").glob("*.py"))
    assert {p.name for p in package} >= {"__init__.py", "_model.py", "_optimum.py", "cg.py",
                                          "_threshold.py", "_train.py"}
    lower = package + [root / "lazy_cg.py", root / "optimizers.py", root / "_checks.py"]
    for path in lower:
        up = [m for m in _imports(path) if m.startswith("jaxtd.algorithms")]
        assert not up, (path.name, up)
    assert not list(root.glob("_lazy_*.py")), "the lazy modules live in jaxtd/lazy/"


def test_no_module_imports_the_private_modules_of_the_lazy_package():
    """The lazy package's modules import one another; everything else uses its public face
    (``jaxtd.lazy``, ``jaxtd.lazy.cg``)."""
    import pathlib
    root = pathlib.Path(jaxtd.__file__).parent
    for path in root.rglob("*.py"):
        if path.parent.name == "lazy":
            continue
        private = [m for m in _imports(path) if m.startswith("jaxtd.lazy._")
                   or (m.startswith("jaxtd.lazy.") and m.split(".")[2].startswith("_"))]
        assert not private, (path.relative_to(root), private)


def test_the_earlier_module_name_of_the_cg_solver_is_the_same_module():
    import jaxtd.lazy_cg
    from jaxtd import lazy
    assert jaxtd.lazy_cg is lazy.cg
    assert jaxtd.lazy_cg.cg_lstsq is lazy.cg_lstsq is lazy.cg.cg_lstsq
    assert callable(jaxtd.lazy_cg.residual_floor)


def test_config_is_plain_data_below_the_engine():
    """The configuration reads its size rules (lazy threshold, record cadence, bucketings) from
    ``jaxtd._sizes``, plain Python: ``import jaxtd.config`` loads no JAX, and config imports
    neither the runner, the sweep nor the lazy solver, not even inside a function."""
    import pathlib
    import subprocess
    code = ("import sys, jaxtd.config, jaxtd._sizes; "
            "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if 'jax' in m)")
    subprocess.run([sys.executable, "-c", code], check=True)
    root = pathlib.Path(jaxtd.__file__).parent
    engine = ("jaxtd._run", "jaxtd._sweep", "jaxtd.lazy")
    found = [m for m in _imports(root / "config.py") if m.startswith(engine)]
    assert not found, found
    assert not [m for m in _imports(root / "_sizes.py") if m.startswith(("jax", "numpy", "pandas"))]


def test_each_constant_name_has_one_definition():
    """One name per meaning, one definition per name: an upper-case constant is assigned at
    module level in one module of the package only (others import it). ``SCHEMA`` is each
    algorithm's own table schema, one meaning, reached through ``jaxtd.config.schema_of``."""
    import ast
    import collections
    import pathlib
    root = pathlib.Path(jaxtd.__file__).parent
    defined = collections.defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            else:
                continue
            for name in names:
                if name.isupper() and name != "SCHEMA":
                    defined[name].append(str(path.relative_to(root)))
    twice = {name: paths for name, paths in defined.items() if len(paths) > 1}
    assert not twice, twice
    from jaxtd import config, models, schema
    from jaxtd.algorithms import base
    assert models.SIGNS == ("auto", "positive", "random")          # initial fixed signs
    assert base.SIGN_RULES == ("residual", "keep")                 # sign of a re-drawn row
    assert config.TARGET_KINDS == ("orthonormal", "basis", "random")
    assert "choice" in schema.PARAM_KINDS
    assert not hasattr(config, "_sweep") and not hasattr(config, "KINDS")


def _module_graph() -> dict:
    """``{module: modules of jaxtd it imports}``, function-local imports included; ``from
    package import submodule`` counts as an import of the submodule only."""
    import ast
    import pathlib
    root = pathlib.Path(jaxtd.__file__).parent
    paths = {}
    for path in root.rglob("*.py"):
        parts = ("jaxtd",) + path.relative_to(root).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def owner(name):
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in paths.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(owner(a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    found.add(sub if sub in paths else owner(node.module))
        graph[name] = found - {"", "jaxtd", name}
    return graph


def test_the_imports_of_the_package_have_no_cycle():
    """Layers point down: no module reaches itself through imports, not even through one made
    inside a function (such an import hides a cycle, it does not remove it)."""
    graph = _module_graph()
    done, cycles = set(), []

    def visit(module, path):
        for dep in sorted(graph.get(module, ())):
            if dep in path:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in done:
                visit(dep, path + [dep])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert not cycles, cycles


# The rows of docs/architecture.md ("Layers"), top first: a module imports only modules of its
# own row or of the rows above it.
LAYERS = (
    ("jaxtd._sizes", "jaxtd.units", "jaxtd.schema", "jaxtd.config"),
    ("jaxtd.store", "jaxtd.results", "jaxtd.stats", "jaxtd._buckets"),
    ("jaxtd._precision", "jaxtd._lapack", "jaxtd._checks", "jaxtd.shapes", "jaxtd.symcp", "jaxtd._extended",
     "jaxtd._aligned", "jaxtd.losses", "jaxtd.representation", "jaxtd.targets",
     "jaxtd.initialization", "jaxtd.models", "jaxtd.optimizers"),
    ("jaxtd.lazy.cg", "jaxtd.lazy._model", "jaxtd.lazy._optimum", "jaxtd.lazy._train",
     "jaxtd.lazy._threshold", "jaxtd.lazy", "jaxtd.lazy_cg", "jaxtd.network", "jaxtd.metrics"),
    ("jaxtd.algorithms.base", "jaxtd.algorithms._gd", "jaxtd.algorithms._variant",
     "jaxtd.algorithms._deflation", "jaxtd.algorithms._lazy_gd", "jaxtd.algorithms._network",
     "jaxtd.algorithms"),
    ("jaxtd._run", "jaxtd._executables", "jaxtd._sweep", "jaxtd.log", "jaxtd.distributed",
     "jaxtd.compile_cache", "jaxtd.transition", "jaxtd.phase"),
    ("jaxtd.experiment",),
    ("jaxtd.plots", "jaxtd.cli", "jaxtd.__main__", "jaxtd"),  # jaxtd: the lazy exports
)
# the configuration builds and traces a config's algorithm tables inside two functions
# (build_algorithm, check_user_algorithm): the only imports that point down the rows
CONFIG_HOOKS = {("jaxtd.config", "jaxtd.algorithms"), ("jaxtd.config", "jaxtd.symcp")}


def test_every_import_points_up_the_layers_of_the_architecture_page():
    graph = _module_graph()
    row = {m: i for i, names in enumerate(LAYERS) for m in names}
    unplaced = sorted(set(graph) - set(row))
    assert not unplaced, f"place these modules in LAYERS and docs/architecture.md: {unplaced}"
    down = sorted((m, d) for m, deps in graph.items() for d in deps
                  if row[d] > row[m] and (m, d) not in CONFIG_HOOKS)
    assert not down, down


# The only imports made inside a function, each with its reason: (module, what it imports) ->
# why. Every other import sits at the top of its module, where a reader sees it (an import
# inside a function hides a dependency and makes nothing lazier once the module above has
# loaded it anyway).
LOCAL_IMPORTS = {
    # optional dependencies, imported where they are used
    ("jaxtd.results", "tqdm"): "optional progress bar",
    ("jaxtd.log", "tensorboardX"): "optional TensorBoard writer",
    ("jaxtd.symcp", "tensorly"): "optional conversion to a tensorly CPTensor",
    # plain-data layers that must load without JAX (tested above and in test_cli.py)
    ("jaxtd.config", "jax"): "config builds and traces a table's algorithm (CONFIG_HOOKS)",
    ("jaxtd.config", "jaxtd.algorithms"): "config builds a table's algorithm (CONFIG_HOOKS)",
    ("jaxtd.config", "jaxtd.symcp"): "config traces a user algorithm on a SymCP (CONFIG_HOOKS)",
    ("jaxtd.schema", "jax"): "the schema traces an optimizer's init and update to probe it",
    ("jaxtd.schema", "optax"): "the schema resolves an optax optimizer name when asked",
    ("jaxtd.store", "jax"): "saved results are read without starting JAX (versions() only)",
    # the CLI's fast paths: --version, --help, presets, params and show load no JAX
    **{("jaxtd.cli", m): "CLI fast path" for m in (
        "jax", "jaxtd.compile_cache", "jaxtd.distributed", "jaxtd.experiment", "jaxtd.phase",
        "jaxtd.plots", "jaxtd.results", "jaxtd.targets", "jaxtd.transition")},
}


def _local_imports() -> set:
    """``{(module, imported)}`` for every import inside a function of the package; ``imported``
    is the top-level package for a third-party import, the module for one of jaxtd's."""
    import ast
    import pathlib
    root = pathlib.Path(jaxtd.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        parts = ("jaxtd",) + path.relative_to(root).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module == "jaxtd":
                    names = [f"jaxtd.{a.name}" for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                else:
                    continue
                found.update((module, n if n.startswith("jaxtd") else n.split(".")[0])
                             for n in names)
    return found


def test_function_local_imports_are_only_the_allowed_ones():
    found = _local_imports()
    extra = sorted(found - set(LOCAL_IMPORTS))
    assert not extra, f"move these imports to the top of their module: {extra}"
    stale = sorted(set(LOCAL_IMPORTS) - found)
    assert not stale, f"no longer imported inside a function, drop from LOCAL_IMPORTS: {stale}"


def test_the_module_map_lists_every_module():
    """docs/architecture.md's module map has one row per module of the package, and no row
    for a module that is gone."""
    import pathlib
    import re
    root = pathlib.Path(jaxtd.__file__).parent
    text = (root.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([\w/]+\.py)` \|", section, re.M)
    modules = sorted(str(p.relative_to(root)) for p in root.rglob("*.py"))
    assert len(listed) == len(set(listed)), "a module listed twice"
    assert sorted(listed) == modules, (sorted(set(modules) - set(listed)),
                                       sorted(set(listed) - set(modules)))
