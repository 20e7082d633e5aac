"""Build triowsgi's per-request modules with mypyc when the wheel is built.

The modules below do the per-request work around the app: reading and checking the
request, the environ and ``wsgi.input``, ``start_response``, the response head, its framing
and its writes. Compiled with mypyc they cost less: 1.08x the requests per second on the
benchmark's Flask route, 1.28x on hello world (``[speed]``, bench/NOTES.md, issue 20).
They stay in the wheel as plain Python modules too, which run where the compiled ones
are not there.

A wheel build (``pip install .``, with or without the ``speed`` extra) compiles them when
it can: it needs a C compiler and the Python headers. Without them the build warns and
the wheel is pure Python, as it is with ``TRIOWSGI_NO_EXTENSIONS=1`` and for an editable
install (whose sources must be what runs).

``python hatch_build.py --inplace`` compiles them next to their sources (the benchmark
does, in its own checkout), ``--clean`` removes them: a compiled module left beside an
edited source would run instead of it (tests/conftest.py refuses stale ones).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

# The package's modules to compile, relative to the project's root: every request goes
# through them. Not _connection.py: compiled, an exception it had caught was raised again
# after an ``await`` in the ``finally`` that follows (a client's reset logged as an
# internal error, tests/test_hostile_clients.py); nor _workers.py (mypyc can't compile a
# ``continue`` inside ``with``). The rest runs once per connection or less.
MODULES = (
    "triowsgi/_dates.py",
    "triowsgi/_direct.py",
    "triowsgi/_files.py",
    "triowsgi/_framing.py",
    "triowsgi/_input.py",
    "triowsgi/_reader.py",
    "triowsgi/_request.py",
    "triowsgi/_response.py",
    "triowsgi/_writer.py",
    "triowsgi/_wsgi.py",
)
# The shared library mypyc puts every module's code in (at the top level of the wheel).
GROUP = "triowsgi"
OPT_OUT = "TRIOWSGI_NO_EXTENSIONS"


def compile_modules(root: Path, out: Path) -> list[Path]:
    """Compile :data:`MODULES` of the project at ``root`` into ``out``; the extension
    modules made, relative to ``out``. Raises whatever mypyc or the compiler raise."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    cwd = Path.cwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(root)  # mypy names modules after paths relative to the working directory
        try:
            extensions = mypycify(
                list(MODULES), opt_level="3", group_name=GROUP, target_dir=scratch
            )
            build = Distribution({"name": "triowsgi", "ext_modules": extensions})
            command: Any = build.get_command_obj("build_ext")
            command.build_lib = str(out)
            command.build_temp = str(Path(scratch) / "temp")
            command.ensure_finalized()
            command.run()
        finally:
            os.chdir(cwd)
    return sorted(path.relative_to(out) for path in out.rglob("*") if path.is_file())


def _compiled_in_place(root: Path) -> list[Path]:
    suffixes = (".so", ".pyd")
    return [path for path in root.glob("*__mypyc*") if path.suffix in suffixes] + [
        path for path in (root / "triowsgi").iterdir() if path.suffix in suffixes
    ]


def _main(argv: list[str]) -> None:
    root = Path(__file__).resolve().parent
    if argv not in (["--inplace"], ["--clean"]):
        raise SystemExit("usage: python hatch_build.py --inplace | --clean")
    for path in _compiled_in_place(root):
        path.unlink()
    if argv == ["--inplace"]:
        with tempfile.TemporaryDirectory() as out:
            for made in compile_modules(root, Path(out)):
                shutil.copy2(Path(out) / made, root / made)
                print(f"compiled {made}")


if __name__ == "__main__":
    _main(sys.argv[1:])
else:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface

    class CompileHook(BuildHookInterface):  # type: ignore[type-arg]
        """Adds the compiled modules to a wheel (see the module's docstring)."""

        PLUGIN_NAME = "custom"

        def initialize(self, version: str, build_data: dict[str, Any]) -> None:
            if self.target_name != "wheel" or version == "editable":
                return
            if os.environ.get(OPT_OUT):
                print(f"triowsgi: {OPT_OUT} is set: pure Python modules only")
                return
            out = Path(self.directory) / "mypyc"
            shutil.rmtree(out, ignore_errors=True)
            try:
                made = compile_modules(Path(self.root), out)
            except (Exception, SystemExit) as exc:  # mypy exits on a type error
                print(
                    f"triowsgi: WARNING: building without compiled modules ({exc!r}); "
                    "the pure Python ones are slower but the same",
                    file=sys.stderr,
                )
                return
            for path in made:
                build_data["force_include"][str(out / path)] = str(path)
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
