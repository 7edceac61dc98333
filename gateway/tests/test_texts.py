"""The text catalogue (config/texts.toml): it loads, and a broken entry is named precisely."""

from pathlib import Path

import pytest

from gateway import texts


def test_catalogue_has_both_languages_for_every_entry() -> None:
    cat = texts.load()
    assert len(cat) > 100
    for key, text in cat.items():
        assert text.sv.strip() and text.en.strip(), key
    assert cat["mode.on_backup"].pair() == ("Reservkraft i drift", "On backup power")
    assert cat["mode.on_backup"].attrs["class"] == "backup"


def test_missing_language_names_file_entry_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "texts.toml"
    bad.write_text('[mode.normal]\nsv = "Normal drift"\n', encoding="utf-8")
    with pytest.raises(texts.TextError) as exc:
        texts.load(bad)
    assert str(bad) in str(exc.value)
    assert "[mode.normal]" in str(exc.value) and "'en'" in str(exc.value)


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="mode.nonsense"):
        texts.load()["mode.nonsense"]


def test_the_panels_table_is_generated_from_the_catalogue() -> None:
    """firmware/sot/paneltexts.py is what `sot texts panel` writes from config/texts.toml: a text
    changed in the catalogue reaches the panel only once the table is regenerated."""
    from gateway import paneltexts

    assert paneltexts.is_current(), "firmware/sot/paneltexts.py is stale: run `sot texts panel`"
    ns: dict[str, str] = {}
    exec(paneltexts.PANEL_FILE.read_text(encoding="utf-8"), ns)
    lines = ns["STRINGS"].strip("\n").split("\n")
    cat = texts.load()
    assert lines == [f"{k}|{t.sv}|{t.en}" for k, t in cat.section("panel").items()]
    assert "on_backup|RESERVKRAFT|BACKUP POWER" in lines


def test_a_panel_text_the_table_cannot_carry_is_refused(tmp_path: Path) -> None:
    from gateway import paneltexts

    bad = tmp_path / "texts.toml"
    bad.write_text('[panel.fuel]\nsv = "Bränsle|diesel"\nen = "Fuel"\n', encoding="utf-8")
    with pytest.raises(texts.TextError) as exc:
        paneltexts.render(texts.load(bad))
    assert str(bad) in str(exc.value) and "[panel.fuel]" in str(exc.value)


def test_sot_texts_panel_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway import paneltexts
    from gateway.cli import main

    assert main(["texts", "panel", "--check"]) == 0
    assert "matches" in capsys.readouterr().out
    # a table older than the catalogue is found out, and writing it brings it up to date
    stale = tmp_path / "paneltexts.py"
    stale.write_text(paneltexts.PANEL_FILE.read_text(encoding="utf-8")
                     .replace("RESERVKRAFT|", "RESERV|"), encoding="utf-8")
    assert not paneltexts.is_current(stale)
    assert paneltexts.write(stale) and paneltexts.is_current(stale)
    assert not paneltexts.write(stale)


def test_every_reason_a_controller_gives_for_a_command_is_explained() -> None:
    """The dashboard and `sot cmd` show a refusal's or failure's reason in words
    (gateway/commands.py why_text); a code without an entry would show as a bare code. The codes
    are read from the firmware's source, so a new one without a text fails here."""
    import re

    from gateway.commands import why_text
    from gateway.config import REPO_ROOT

    src = (REPO_ROOT / "firmware" / "sot" / "command.py").read_text()
    gen_why = src[src.index("def _gen_why"):src.index("def _run")]
    codes = set(re.findall(r'_refuse\([^)]*?"([a-z_]+)"', src))
    codes |= set(re.findall(r'why = "([a-z_]+)"', src))
    codes |= set(re.findall(r'return "([a-z_]*[a-z])"', gen_why))
    codes |= set(re.findall(r'_end\(now, "\w+", "([a-z_]+)', src))
    codes |= set(re.findall(r'"([a-z_]+):%s"', src))
    device = (REPO_ROOT / "firmware" / "sot" / "device.py").read_text()
    status = device[device.index("def status"):device.index("def check_identity")]
    codes |= {f"genset_{s}" for s in re.findall(r'"([a-z_]+)"', status)}
    codes |= {"alarm", "write"}  # alarm:<name> (_latched), write:<error>
    assert {"too_large", "malformed", "clock", "window", "not_yet", "unknown", "mode",
            "genset_offline", "no_start", "local"} <= codes  # the reading above still works
    missing = sorted(c for c in codes if why_text(c) is None)
    assert missing == [], f"config/texts.toml has no command.why entry for {missing}"
