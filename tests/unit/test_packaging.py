"""Layout promises: what imports what, and a light producer."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from tests.support import cli_env

ROOT = Path(__file__).parents[2]


def _imported_modules(folder: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
    return found


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_common_imports_neither_producer_nor_writer() -> None:
    assert not {
        m
        for m in _imported_modules("common")
        if m.startswith(("lancequeue.producer", "lancequeue.writer"))
    }


@pytest.mark.parametrize(
    "folder, forbidden", [("producer", "lancequeue.writer"), ("writer", "lancequeue.producer")]
)
def test_producer_and_writer_never_import_each_other(folder: str, forbidden: str) -> None:
    assert not {m for m in _imported_modules(folder) if m.startswith(forbidden)}


def test_importing_the_producer_loads_neither_lancedb_nor_lance_nor_pyarrow() -> None:
    out = _run(
        "import sys, lancequeue.producer; "
        "print(sorted(m for m in ('lancedb', 'lance', 'pyarrow') if m in sys.modules))"
    )
    assert out.strip() == "[]"


def test_produce_help_does_not_import_lancedb() -> None:
    out = _run(
        "import sys\n"
        "from lancequeue.cli import main\n"
        "try:\n    main(['produce', '--help'])\n"
        "except SystemExit:\n    pass\n"
        "print('LOADED' if {'lancedb', 'lance'} & set(sys.modules) else 'LIGHT')"
    )
    assert "--table" in out
    assert out.strip().endswith("LIGHT")


def test_top_level_help_lists_every_subcommand_without_loading_them() -> None:
    out = _run(
        "import sys\n"
        "from lancequeue.cli import main\n"
        "try:\n    main(['--help'])\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in ('lancedb', 'lance', 'pyarrow') if m in sys.modules))"
    )
    for command in ("writer", "produce", "status"):
        assert command in out
    assert out.strip().endswith("[]")


def test_writer_options_all_have_environment_variables() -> None:
    out = _run(
        "from lancequeue.cli import main\n"
        "try:\n    main(['writer', '--help'])\n"
        "except SystemExit:\n    pass\n"
    )
    for env in (
        "LANCEQUEUE_REDIS",
        "LANCEQUEUE_DB",
        "LANCEQUEUE_TABLE",
        "LANCEQUEUE_SCHEMA",
        "LANCEQUEUE_COALESCE_MS",
        "LANCEQUEUE_MAX_BATCH",
        "LANCEQUEUE_MAX_QUEUE_SIZE",
        "LANCEQUEUE_ON_FLUSHED",
    ):
        assert env in out


def test_the_readme_documents_every_writer_option() -> None:
    import dataclasses

    from lancequeue.writer.settings import WriterSettings

    readme = (ROOT / "README.md").read_text()
    for settings_field in dataclasses.fields(WriterSettings):
        assert f"`{settings_field.metadata['flag']}`" in readme, settings_field.name


def test_the_readme_documents_every_producer_setting() -> None:
    import dataclasses

    from lancequeue.producer.settings import ProducerSettings

    readme = (ROOT / "README.md").read_text()
    for settings_field in dataclasses.fields(ProducerSettings):
        if settings_field.name not in ("table", "redis_url", "data_dir"):
            assert f"`{settings_field.name}`" in readme, settings_field.name


def test_ci_runs_the_readme_s_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    command = readme.split("Run the tests")[1].split("```sh\n")[1].split("\n")[0]
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_protocol_document_carries_the_enqueue_script_verbatim() -> None:
    from lancequeue.common.protocol import ENQUEUE_SCRIPT

    protocol = (ROOT / "PROTOCOL.md").read_text()
    documented = protocol.split("```lua\n")[1].split("```")[0]
    assert _code(documented) == _code(ENQUEUE_SCRIPT)


def test_the_protocol_document_carries_the_abandon_script_verbatim() -> None:
    from lancequeue.common.protocol import ABANDON_SCRIPT

    protocol = (ROOT / "PROTOCOL.md").read_text()
    documented = protocol.split("```lua\n")[2].split("```")[0]
    assert _code(documented, indented=True) == _code(ABANDON_SCRIPT, indented=True)


def _code(script: str, indented: bool = False) -> list[str]:
    """The script's lines of code: no comment lines, no blank lines (and, if ``indented``, no
    indentation: the document indents the abandon script in a list)."""
    lines = [line.strip() if indented else line.rstrip() for line in script.splitlines()]
    return [line for line in lines if line.strip() and not line.strip().startswith("--")]


def test_the_readme_s_layout_names_every_module_of_each_package_and_no_other() -> None:
    layout = (ROOT / "README.md").read_text().split("### Layout\n", 1)[1].split("\n## ", 1)[0]
    described = re.split(r"^- `(\w+)/`", layout, flags=re.M)[1:]
    packages = {
        name: text.split("\n\n")[0]
        for name, text in zip(described[::2], described[1::2], strict=True)
    }
    assert sorted(packages) == ["bench", "cli", "common", "producer", "writer"]
    for package, text in packages.items():
        named = set(re.findall(r"`(\w+\.py)`", text))
        present = {
            path.name
            for path in (ROOT / package).glob("*.py")
            if path.name not in ("__init__.py", "__main__.py")
        }
        assert named == present, (package, sorted(named - present), sorted(present - named))
        if (ROOT / package / "lua").is_dir():
            assert "`lua/" in text, package


def test_the_docker_image_copies_every_folder_the_package_is_built_from() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert folders <= copied, sorted(folders - copied)
