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
