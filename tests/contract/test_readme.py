"""The README documents every setting the services read, and its first screen has the two commands."""

from __future__ import annotations

from pathlib import Path

from scripts.settings_table import table
from services.settings import AggregatorSettings, FormrSettings, MailerSettings

SERVICES = (AggregatorSettings, MailerSettings, FormrSettings)
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    names = {"TN_" + n.upper() for cls in SERVICES for n in cls.model_fields}
    missing = sorted(n for n in names if f"`{n}`" not in README)
    assert not missing, f"add to README (python scripts/settings_table.py): {missing}"


def test_every_setting_says_what_it_is_for() -> None:
    bare = sorted({"TN_" + n.upper() for cls in SERVICES for n, f in cls.model_fields.items() if not f.description})
    assert not bare, f"give these a description= in services/settings.py: {bare}"


def test_the_readme_settings_table_is_current() -> None:
    """Defaults and descriptions in the README are the ones the services use."""
    assert table() in README, "regenerate the table: python scripts/settings_table.py"


def test_first_screen_has_exactly_the_two_setup_commands() -> None:
    first = README.split("---", 1)[0]
    commands = [line.split("#")[0].strip() for line in first.splitlines() if line.startswith("make ")]
    assert commands == ["make demo", "make test"]
