"""The Teams app package: manifest and localization valid against Microsoft's schemas, icons, the zip."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from jsonschema import Draft4Validator, Draft6Validator
from PIL import Image, ImageChops

from infra.teams import build_package, make_icons
from tests.infra.helpers import ROOT, teams_schema

TEAMS = ROOT / "infra" / "teams"
BOT_ID = "0b8a3c4e-1d2f-4a5b-9c6d-7e8f9a0b1c2d"
# Microsoft's Teams schemas say draft-04 but use `const` (draft-06), which their own validator (ajv)
# checks; a plain Draft4Validator would silently ignore it.
TeamsValidator = jsonschema.validators.extend(Draft4Validator, {"const": Draft6Validator.VALIDATORS["const"]})


def template() -> dict[str, Any]:
    result: dict[str, Any] = json.loads((TEAMS / "manifest.json").read_text(encoding="utf-8"))
    return result


def built_manifest() -> dict[str, Any]:
    return build_package.manifest_for(BOT_ID, build_package.app_version())


def validate(document: dict[str, Any], schema_file: Path) -> list[str]:
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    # Some patterns use `\p{L}` (JavaScript Unicode classes) that Python's `re` cannot compile: check the
    # schema's structure without compiling every pattern; a pattern is only compiled when it is used.
    TeamsValidator.check_schema(schema, format_checker=None)
    validator = TeamsValidator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def test_the_built_manifest_is_valid_against_the_official_teams_schema() -> None:
    manifest = built_manifest()
    assert validate(manifest, teams_schema(manifest["manifestVersion"])) == []


def test_the_manifest_uses_a_current_schema_version_and_names_it() -> None:
    manifest = template()
    version = manifest["manifestVersion"]
    assert tuple(int(part) for part in version.split(".")) >= (1, 17)
    assert manifest["$schema"].endswith(f"/teams/v{version}/MicrosoftTeams.schema.json")


def test_the_schema_check_really_rejects_a_broken_manifest() -> None:
    manifest = built_manifest()
    schema = teams_schema(manifest["manifestVersion"])
    broken = {**manifest, "manifestVersion": "1.0"}
    assert any("manifestVersion" in error for error in validate(broken, schema))
    no_bot_id = json.loads(json.dumps(manifest))
    no_bot_id["bots"][0]["botId"] = "${{BOT_ID}}"
    assert any("botId" in error for error in validate(no_bot_id, schema))


def test_every_localization_file_is_valid_and_only_translates_what_exists() -> None:
    manifest = built_manifest()
    schema = teams_schema(manifest["manifestVersion"], "MicrosoftTeams.Localization.schema.json")
    files = [language["file"] for language in manifest["localizationInfo"]["additionalLanguages"]]
    assert files == ["en.json"]
    for name in files:
        localization = json.loads((TEAMS / name).read_text(encoding="utf-8"))
        assert validate(localization, schema) == [], name
        for key in localization:
            match = re.fullmatch(r"bots\[0\]\.commandLists\[(\d)\]\.commands\[(\d+)\]\.(title|description)", key)
            if match:
                command_list, command, field = int(match[1]), int(match[2]), match[3]
                assert field in manifest["bots"][0]["commandLists"][command_list]["commands"][command], key
        command_keys = {key for key in localization if key.startswith("bots[0].commandLists")}
        expected = {
            f"bots[0].commandLists[{i}].commands[{j}].{field}"
            for i, command_list in enumerate(manifest["bots"][0]["commandLists"])
            for j, _ in enumerate(command_list["commands"])
            for field in ("title", "description")
        }
        assert command_keys == expected, f"{name} must translate every command"


def test_dutch_is_the_default_language_with_english_beside_it() -> None:
    manifest = template()
    assert manifest["localizationInfo"]["defaultLanguageTag"] == "nl-BE"
    assert [language["languageTag"] for language in manifest["localizationInfo"]["additionalLanguages"]] == ["en"]
    english = json.loads((TEAMS / "en.json").read_text(encoding="utf-8"))
    assert english["name.short"] != manifest["name"]["short"]


def test_the_bot_is_in_personal_team_and_group_chat_with_the_dutch_commands() -> None:
    bot = template()["bots"][0]
    assert bot["botId"] == "${{BOT_ID}}"
    assert set(bot["scopes"]) == {"personal", "team", "groupChat"}
    assert {scope for command_list in bot["commandLists"] for scope in command_list["scopes"]} == set(bot["scopes"])
    titles = {
        tuple(command_list["scopes"]): [command["title"] for command in command_list["commands"]]
        for command_list in bot["commandLists"]
    }
    # A referral shows the family's data on its cards: `nieuw` is offered only where nobody else reads along.
    # `datalek` everywhere: its card asks for no client data (`bot.oversight.breach`).
    assert titles == {("personal",): ["nieuw", "status", "hulp", "datalek"],
                      ("team", "groupChat"): ["status", "hulp", "koppel", "datalek"]}
    for command_list in bot["commandLists"]:
        assert all(command["description"] for command in command_list["commands"])
    assert template()["validDomains"] == []


def test_the_bot_id_and_version_are_filled_in_and_nothing_else_is_left() -> None:
    manifest = built_manifest()
    assert manifest["bots"][0]["botId"] == BOT_ID
    assert manifest["version"] == build_package.app_version()
    assert "${{" not in json.dumps(manifest)
    assert manifest["id"] != BOT_ID


@pytest.mark.parametrize("bad", ["", "not-a-guid", f"{BOT_ID}x", f'{BOT_ID[:-1]}"'])
def test_a_bot_id_that_is_not_a_guid_is_refused(bad: str) -> None:
    with pytest.raises(build_package.PackageError, match="GUID"):
        build_package.manifest_for(bad, "1.0.0")


def test_a_placeholder_without_a_value_is_refused() -> None:
    with pytest.raises(build_package.PackageError, match="TENANT"):
        build_package.fill_placeholders('{"a": "${{TENANT}}", "b": "${{BOT_ID}}"}', {"BOT_ID": BOT_ID})
    with pytest.raises(build_package.PackageError, match="EXTRA"):
        build_package.fill_placeholders('{"b": "${{BOT_ID}}"}', {"BOT_ID": BOT_ID, "EXTRA": "x"})


def test_the_zip_holds_exactly_the_manifest_the_icons_and_the_localization(tmp_path: Path) -> None:
    output = build_package.build_package(BOT_ID, tmp_path / "app.zip")
    with zipfile.ZipFile(output) as package:
        assert sorted(package.namelist()) == ["color.png", "en.json", "manifest.json", "outline.png"]
        manifest = json.loads(package.read("manifest.json"))
        assert manifest["bots"][0]["botId"] == BOT_ID
        assert package.read("en.json") == (TEAMS / "en.json").read_bytes()
        assert package.read("color.png") == (TEAMS / "color.png").read_bytes()
        with Image.open(io.BytesIO(package.read("outline.png"))) as outline:
            assert outline.size == (32, 32)
        assert package.testzip() is None


def test_the_same_input_gives_the_same_zip(tmp_path: Path) -> None:
    first = build_package.build_package(BOT_ID, tmp_path / "a.zip").read_bytes()
    second = build_package.build_package(BOT_ID, tmp_path / "b.zip").read_bytes()
    assert first == second


def run_script(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TEAMS / "build_package.py"), "--output", str(tmp_path / "out.zip")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=60,
        check=False,
    )


def test_the_script_refuses_to_build_without_microsoft_app_id(tmp_path: Path) -> None:
    result = run_script(tmp_path, {})
    assert result.returncode == 2
    assert "MicrosoftAppId is not set" in result.stderr
    assert not (tmp_path / "out.zip").exists()


def test_the_script_builds_with_microsoft_app_id(tmp_path: Path) -> None:
    result = run_script(tmp_path, {"MicrosoftAppId": BOT_ID})
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(tmp_path / "out.zip") as package:
        assert json.loads(package.read("manifest.json"))["bots"][0]["botId"] == BOT_ID


def test_the_script_names_a_bad_app_id(tmp_path: Path) -> None:
    result = run_script(tmp_path, {"MicrosoftAppId": "my-bot"})
    assert result.returncode == 2
    assert "'my-bot' is not a GUID" in result.stderr


# --- icons ---------------------------------------------------------------------------------------


def test_the_colour_icon_is_192_square_and_opaque() -> None:
    with Image.open(TEAMS / template()["icons"]["color"]) as icon:
        assert icon.size == (192, 192)
        rgba = icon.convert("RGBA")
        assert rgba.getchannel("A").getextrema() == (255, 255)


def test_the_outline_icon_is_32_square_white_on_transparent() -> None:
    with Image.open(TEAMS / template()["icons"]["outline"]) as icon:
        assert icon.size == (32, 32)
        assert icon.mode == "RGBA"
        red, green, blue, alpha = icon.split()
        visible = alpha.point(lambda value: 255 if value else 0)
        for channel in (red, green, blue):
            # every pixel that shows is pure white
            assert ImageChops.multiply(ImageChops.invert(channel), visible).getbbox() is None
        assert alpha.getextrema() == (0, 255)
        corners = [alpha.getpixel(xy) for xy in ((0, 0), (31, 0), (0, 31), (31, 31))]
        assert corners == [0, 0, 0, 0]


def test_the_accent_colour_is_the_icon_background() -> None:
    accent = template()["accentColor"]
    assert accent.lower() == "#{:02x}{:02x}{:02x}".format(*make_icons.ACCENT)
    with Image.open(TEAMS / "color.png") as icon:
        assert icon.convert("RGB").getpixel((2, 2)) == make_icons.ACCENT


@pytest.mark.parametrize(
    ("name", "draw"), [("color.png", make_icons.color_icon), ("outline.png", make_icons.outline_icon)]
)
def test_the_committed_icons_are_what_the_script_draws(name: str, draw: Any) -> None:
    """Change the drawing, rerun `python infra/teams/make_icons.py`, commit both."""
    with Image.open(TEAMS / name) as committed:
        drawn = draw().convert("RGBA")
        difference = ImageChops.difference(committed.convert("RGBA"), drawn)
        assert max(high for _, high in difference.getextrema()) <= 2
