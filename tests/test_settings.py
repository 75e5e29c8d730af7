"""evaluators.settings: the one reader of the environment, its registry and the README table made from it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from evaluators import settings
from evaluators.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(REPO / "evaluators").rglob("*.py"), *(REPO / "chexgen_ui").rglob("*.py"), REPO / "app.py"])
# Writes to the environment that stay outside settings.py: (file, variable).
ALLOWED_WRITES = {("chexgen_ui/main.py", "GRADIO_ANALYTICS_ENABLED")}


def _environment_uses(source: str, rel: str) -> list[tuple[int, str]]:
    """(line, what) for each touch of os.environ / os.getenv / os.putenv in ``source`` (the file ``rel``) that is
    not an allowed write."""
    tree = ast.parse(source, filename=rel)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [(node.lineno, f"from os import {a.name}") for a in node.names
                      if a.name in {"environ", "environb", "getenv", "getenvb", "putenv"}]
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"
                and node.attr in {"environ", "environb", "getenv", "getenvb", "putenv"}):
            continue
        up = parents.get(node)
        call = parents.get(up)
        if (node.attr == "environ" and isinstance(up, ast.Attribute) and up.attr == "setdefault"
                and isinstance(call, ast.Call) and call.args and isinstance(call.args[0], ast.Constant)
                and (rel, call.args[0].value) in ALLOWED_WRITES):
            continue
        if (node.attr == "environ" and isinstance(up, ast.Subscript) and isinstance(up.ctx, ast.Store)
                and isinstance(up.slice, ast.Constant) and (rel, up.slice.value) in ALLOWED_WRITES):
            continue
        found.append((node.lineno, f"os.{node.attr}"))
    return found


def test_only_settings_reads_the_environment():
    offenders = [f"{p.relative_to(REPO)}:{line}: {what}" for p in SOURCES if p != REPO / "evaluators" / "settings.py"
                 for line, what in _environment_uses(p.read_text(), p.relative_to(REPO).as_posix())]
    assert offenders == [], "read it through evaluators.settings.get (and register it):\n" + "\n".join(offenders)


def test_the_environment_check_catches_reads():
    main = "chexgen_ui/main.py"  # the file with the allowed write, so only the variable decides
    for src in ("import os\nx = os.environ.get('A')\n", "import os\nx = os.getenv('A')\n",
                "from os import environ\n", "import os\nx = os.environ['A']\n", "import os\nenv = dict(os.environ)\n",
                "import os\nos.environ.setdefault('OTHER', '1')\n", "import os\nos.environ['OTHER'] = '1'\n"):
        assert _environment_uses(src, main), src
    ok = "import os\nos.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')\n"
    assert _environment_uses(ok, main) == [] and _environment_uses(ok, "evaluators/x.py")


def test_readme_table_is_the_registry():
    readme = (REPO / "README.md").read_text()
    m = re.search(r"<!-- settings-table[^>]*-->\n(.*?)\n<!-- /settings-table -->", readme, re.S)
    assert m, "README.md lost its settings table markers"
    assert m.group(1) == settings.table_markdown(), "README settings table differs: paste settings.table_markdown()"
    for s in settings.SETTINGS.values():
        assert "|" not in s.doc + s.default_text(), s.name
        assert s.kind in settings.KINDS, s.name
        assert (s.minimum is not None) == (s.kind == "int"), s.name


def test_every_variable_named_in_the_code_is_registered():
    """A CHEXGEN_* name in evaluators/, chexgen_ui/, benchmarks/ or the README is a registered setting (or a prefix
    in prose)."""
    files = [*SOURCES, *(REPO / "benchmarks").rglob("*.py"), REPO / "README.md"]
    names = {n for p in files for n in re.findall(r"\bCHEXGEN_[A-Z0-9_]*[A-Z0-9]\b", p.read_text())}
    assert names - set(settings.SETTINGS) == set()
    with pytest.raises(KeyError, match=r"CHEXGEN_NOT_A_SETTING.*SETTINGS"):
        settings.get("CHEXGEN_NOT_A_SETTING")


@pytest.mark.parametrize("name", [s.name for s in settings.SETTINGS.values() if s.kind == "int"])
def test_a_bad_whole_number_is_refused_naming_the_variable(name, monkeypatch):
    row = settings.SETTINGS[name]
    monkeypatch.delenv(name, raising=False)
    assert settings.get(name) == row.default
    for bad in ("lots", "2.5", "1e400", "nan", str(row.minimum - 1)):
        monkeypatch.setenv(name, bad)
        with pytest.raises(InputError, match=rf"^{name}='{re.escape(bad)}' is not a whole number >= {row.minimum}; "
                                             r"unset it or give e\.g\. \d+\.$"):
            settings.get(name)
    monkeypatch.setenv(name, f" {row.minimum + 40} ")
    assert settings.get(name) == row.minimum + 40
    monkeypatch.setenv(name, "")  # blank is unset
    assert settings.get(name) == row.default


def test_whole_numbers_parse_one_way_and_are_read_at_call_time(monkeypatch):
    from evaluators.imageio import MAX_PIXELS, max_pixels_limit
    from evaluators.imagesets import max_rows_limit

    monkeypatch.delenv("CHEXGEN_MAX_PIXELS", raising=False)
    assert max_pixels_limit() == MAX_PIXELS
    monkeypatch.setenv("CHEXGEN_MAX_PIXELS", "1e6")  # read now, not at import
    assert max_pixels_limit() == 1_000_000
    monkeypatch.setenv("CHEXGEN_MAX_ROWS", "5000000.0")
    assert max_rows_limit() == 5_000_000
    # the caller's default (public vs local mode) wins over the registry's; the minimum still applies
    monkeypatch.delenv("CHEXGEN_QUEUE_MAX_SIZE", raising=False)
    assert settings.int_setting("CHEXGEN_QUEUE_MAX_SIZE", None) is None
    assert settings.int_setting("CHEXGEN_QUEUE_MAX_SIZE") == 16
    monkeypatch.setenv("CHEXGEN_PUBLIC_MAX_UTILITY_IMAGE_SIZE", "8")
    with pytest.raises(InputError, match="CHEXGEN_PUBLIC_MAX_UTILITY_IMAGE_SIZE='8' is not a whole number >= 16"):
        settings.int_setting("CHEXGEN_PUBLIC_MAX_UTILITY_IMAGE_SIZE", 128)
    with pytest.raises(TypeError, match="CHEXGEN_HOME"):
        settings.int_setting("CHEXGEN_HOME")


def test_typed_values(monkeypatch, tmp_path):
    for value, on in (("1", True), ("TRUE", True), (" yes ", True), ("on", True), ("0", False), ("no", False),
                      ("", False)):
        monkeypatch.setenv("CHEXGEN_ALLOW_REMOTE_CODE", value)
        assert settings.get("CHEXGEN_ALLOW_REMOTE_CODE") is on, value
    monkeypatch.setenv("CHEXGEN_MODELS", f"{tmp_path / 'a.toml'}:: ~/b :")
    assert settings.get("CHEXGEN_MODELS") == [tmp_path / "a.toml", Path("~/b").expanduser()]
    monkeypatch.delenv("CHEXGEN_MODELS")
    assert settings.get("CHEXGEN_MODELS") == []
    monkeypatch.setenv("CHEXGEN_RADDINO", "~/rad-dino ")
    assert settings.get("CHEXGEN_RADDINO") == Path("~/rad-dino").expanduser()
    monkeypatch.setenv("CHEXGEN_RADDINO", "  ")
    assert settings.get("CHEXGEN_RADDINO") is None
    monkeypatch.delenv("CHEXGEN_DEVICE", raising=False)
    assert settings.get("CHEXGEN_DEVICE") == "auto" and settings.select_device() in {"cpu", "cuda", "mps"}
    monkeypatch.setenv("CHEXGEN_DEVICE", "tpu")
    with pytest.raises(InputError, match="tpu"):
        settings.select_device()
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CHEXGEN_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    assert not settings.is_offline()
    monkeypatch.setenv("CHEXGEN_OFFLINE", "yes")
    assert settings.is_offline()
    monkeypatch.setenv("CHEXGEN_HOME", str(tmp_path / "home"))
    assert settings.chexgen_home() == tmp_path / "home" and (tmp_path / "home").is_dir()
    monkeypatch.delenv("CHEXGEN_HOME")
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert settings.chexgen_home() == tmp_path / "xdg" / "chexgen"


def test_defaults_written_beside_the_code_match_the_registry():
    from chexgen_ui import main, quotas, services, utility_service
    from evaluators import imageio, imagesets, limits
    from evaluators.generators import baselines

    d = {name: s.default for name, s in settings.SETTINGS.items()}
    for k in limits.KNOBS.values():
        assert d[k.env] == k.public_max and settings.SETTINGS[k.env].minimum == max(k.minimum, 1), k.env
    pairs = {
        "CHEXGEN_PUBLIC_MAX_FILES": services.PUBLIC_MAX_FILES, "CHEXGEN_PUBLIC_MAX_BYTES": services.PUBLIC_MAX_BYTES,
        "CHEXGEN_PUBLIC_MAX_PIXELS": services.PUBLIC_MAX_PIXELS,
        "CHEXGEN_PUBLIC_MAX_GENERATE_SET": services.PUBLIC_MAX_GENERATE_SET,
        "CHEXGEN_PUBLIC_MAX_UTILITY_EPOCHS": utility_service.PUBLIC_MAX_EPOCHS,
        "CHEXGEN_PUBLIC_MAX_UTILITY_IMAGE_SIZE": utility_service.PUBLIC_MAX_IMAGE_SIZE,
        "CHEXGEN_PUBLIC_SESSION_QUOTA_MB": quotas.PUBLIC_SESSION_MB, "CHEXGEN_PUBLIC_TOTAL_QUOTA_MB": quotas.PUBLIC_TOTAL_MB,
        "CHEXGEN_PUBLIC_RETENTION_HOURS": quotas.PUBLIC_RETENTION_HOURS,
        "CHEXGEN_PUBLIC_MAX_FILE_SIZE": main.PUBLIC_MAX_FILE_SIZE, "CHEXGEN_QUEUE_MAX_SIZE": main.PUBLIC_QUEUE_SIZE,
        "CHEXGEN_CONCURRENCY": main.DEFAULT_CONCURRENCY, "CHEXGEN_MAX_PIXELS": imageio.MAX_PIXELS,
        "CHEXGEN_MAX_ROWS": imagesets.MAX_ROWS, "CHEXGEN_COPYCAT_SOURCE": baselines.DEFAULT_COPYCAT_SOURCE,
    }
    assert {n: d[n] for n in pairs} == pairs
