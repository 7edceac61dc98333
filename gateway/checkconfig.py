"""`sot config check`: every configuration file validated with the same schema mechanism
(`gateway/validate.py`), one summary line per file, or the first error naming file, entry and
key. Here, not in `gateway.config`, because it reads the alert files too, and the site loader
must not depend on the alert configuration."""

from __future__ import annotations

from pathlib import Path

from . import settings
from .alerts.config import load_contacts, load_rules
from .config import CONFIG_DIR, load_profiles, load_sites
from .validate import rel


def check_all(config_dir: Path = CONFIG_DIR) -> list[str]:
    """Validate every profile, site, the alert rules, the contacts and gateway.toml; returns a
    summary line per file. Raises ConfigError at the first problem."""
    profiles = load_profiles(config_dir)
    lines = [
        f"ok  {rel(p.path)}: {len(p.points)} points in {len(p.blocks())} read blocks"
        for p in profiles.values()
    ]
    for s in load_sites(config_dir, profiles).values():
        lines.append(f"ok  {rel(s.path)}: {len(s.devices)} devices on {len(s.buses)} bus(es)")
    rules_path, contacts_path = config_dir / "alerts.toml", config_dir / "contacts.toml"
    if rules_path.exists():
        rules, _grouping = load_rules(rules_path)
        on = sum(1 for r in rules.values() if r.enabled)
        lines.append(f"ok  {rel(rules_path)}: {on} of {len(rules)} rules enabled")
    if contacts_path.exists():
        contacts = load_contacts(contacts_path)
        n = sum(len(c) for c in contacts.values())
        lines.append(f"ok  {rel(contacts_path)}: {n} contacts in {len(contacts)} "
                     "municipalities")
    gateway_path = config_dir / "gateway.toml"
    if gateway_path.exists():
        cfg = settings.load(gateway_path)
        lines.append(f"ok  {rel(gateway_path)}: {len(cfg)} sections")
    return lines
