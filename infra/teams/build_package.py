"""Build the Teams app package: `dist/veilig-doorverwijzen-teams.zip`.

    MicrosoftAppId=<bot app registration's client id> python infra/teams/build_package.py

The manifest template (`manifest.json` next to this file) holds `${{NAME}}` placeholders:
`BOT_ID` comes from the environment variable `MicrosoftAppId` (the same one the bot reads) and
`APP_VERSION` from `pyproject.toml`. The zip holds exactly the manifest, the two icons and the
localization files the manifest names, at its root, with fixed timestamps (same input, same bytes).
Only the standard library is used, so this runs with any Python 3.11.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tomllib
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TEMPLATE = HERE / "manifest.json"
DEFAULT_OUTPUT = ROOT / "dist" / "veilig-doorverwijzen-teams.zip"
PLACEHOLDER = re.compile(r"\$\{\{([A-Z_][A-Z0-9_]*)\}\}")
GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


class PackageError(ValueError):
    """The package cannot be built; the message says what to fix."""


def app_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The bot's version from `pyproject.toml`; Teams wants it as MAJOR.MINOR.PATCH."""
    version = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]
    if not isinstance(version, str) or not SEMVER.match(version):
        raise PackageError(f"project.version {version!r} in {pyproject} is not MAJOR.MINOR.PATCH")
    return version


def fill_placeholders(template: str, values: Mapping[str, str]) -> str:
    """Replace every `${{NAME}}` in `template`; an unknown or unused name is an error."""
    used = set(PLACEHOLDER.findall(template))
    missing = sorted(used - set(values))
    if missing:
        raise PackageError(f"no value for placeholder(s) {', '.join(missing)} in {TEMPLATE.name}")
    unused = sorted(set(values) - used)
    if unused:
        raise PackageError(f"{TEMPLATE.name} has no placeholder(s) {', '.join(unused)}")
    for name, value in values.items():
        if '"' in value or "\\" in value or PLACEHOLDER.search(value):
            raise PackageError(f"the value for {name} may not contain quotes, backslashes or placeholders")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def manifest_for(bot_id: str, version: str, template: Path = TEMPLATE) -> dict[str, Any]:
    """The manifest with the bot id and version filled in."""
    bot_id = bot_id.strip()
    if not GUID.match(bot_id):
        raise PackageError(
            f"MicrosoftAppId={bot_id!r} is not a GUID; use the Application (client) ID of the bot's "
            "app registration, e.g. 0b8a3c4e-1d2f-4a5b-9c6d-7e8f9a0b1c2d"
        )
    filled = fill_placeholders(template.read_text(encoding="utf-8"), {"BOT_ID": bot_id.lower(), "APP_VERSION": version})
    manifest: dict[str, Any] = json.loads(filled)
    return manifest


def package_files(manifest: Mapping[str, Any], folder: Path = HERE) -> list[Path]:
    """The files besides manifest.json that go in the package: icons, then localization files."""
    names = [manifest["icons"]["color"], manifest["icons"]["outline"]]
    localization = manifest.get("localizationInfo", {})
    if "defaultLanguageFile" in localization:
        names.append(localization["defaultLanguageFile"])
    names.extend(language["file"] for language in localization.get("additionalLanguages", []))
    files = []
    for name in names:
        path = folder / name
        if "/" in name or "\\" in name or not path.is_file():
            raise PackageError(f"the manifest names {name!r}, which is not a file next to {TEMPLATE.name}")
        files.append(path)
    return files


def build_package(bot_id: str, output: Path = DEFAULT_OUTPUT, *, version: str | None = None) -> Path:
    """Write the package to `output` and return its path."""
    manifest = manifest_for(bot_id, version or app_version())
    files = package_files(manifest)
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as package:
        _add(package, "manifest.json", (json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
        for path in files:
            _add(package, path.name, path.read_bytes())
    return output


def _add(package: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    package.writestr(info, data)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(description="Build the Teams app package (bot id from $MicrosoftAppId).")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}")
    arguments = parser.parse_args(argv)
    bot_id = env.get("MicrosoftAppId", "").strip()
    if not bot_id:
        sys.stderr.write(
            "MicrosoftAppId is not set: the Teams package must name the bot it talks to.\n"
            "Set it to the Application (client) ID of the bot's app registration, e.g.\n"
            "  MicrosoftAppId=0b8a3c4e-1d2f-4a5b-9c6d-7e8f9a0b1c2d make package\n"
        )
        return 2
    try:
        path = build_package(bot_id, arguments.output)
    except PackageError as error:
        sys.stderr.write(f"cannot build the Teams package: {error}\n")
        return 2
    sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
