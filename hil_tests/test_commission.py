"""`sot commission` through the real parts: simulated plant (pymodbus) -> firmware (MicroPython
unix port) -> Mosquitto -> the checklist, with a scripted answer file in place of the technician.
The report a municipality gets must say which checks passed and, for a faulty site, exactly which
failed and why.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.config import load_sites
from gateway.mqttauth import GATEWAY_USER
from gateway.tooling import commission
from hil_tests.rig.broker import Broker

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix", "bus", "network", "panel")]

SITE = "are-kall"
ANSWERS = {"technician": "Anna <Tekniker> & Co", "panel_ok": "ja", "gen_test": "ja"}


def commission_site(broker: Broker, tmp_path: Path, prepare=None) -> commission.Report:
    site = load_sites()[SITE]
    target = commission.SimTarget(site, tmp_path, mqtt_host=broker.host, mqtt_port=broker.port,
                                  login=broker.login(SITE), prepare=prepare)
    return commission.run(site, target, mqtt_host=broker.host, mqtt_port=broker.port,
                          mqtt_login=broker.login(GATEWAY_USER),
                          answers=commission.Answers(ANSWERS, ask=None), settle_s=20)


def statuses(report: commission.Report) -> dict[str, str]:
    return {c.key: c.status for c in report.checks}


@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="prints the PDF with Chromium (scripts/bootstrap.sh --browser)")
def test_healthy_site_passes_every_check_and_the_report_prints(broker: Broker, tmp_path: Path):
    report = commission_site(broker, tmp_path)
    assert report.failed() == [], [(c.key, c.measured, c.why_en) for c in report.checks]
    assert set(statuses(report).values()) == {"pass"}, statuses(report)
    assert report.passed
    gen = report.check("gen_test")
    assert "230" in gen.measured and "50" in gen.measured and "stopped" in gen.measured
    tank = report.check("tank")
    assert tank.measured.startswith("80 % = 320 l")  # 80 % of 400 l

    paths = commission.write_report(report, tmp_path / "report")
    page = paths["html"].read_text()
    assert page.index("GODKÄND") < page.index("PASSED")  # Swedish first
    assert "Anna &lt;Tekniker&gt; &amp; Co" in page and "<Tekniker>" not in page
    assert page.count('<tr class="pass">') == len(report.checks)
    pdf = paths["pdf"].read_bytes()
    assert commission.pdf_pages(pdf) >= 1
    assert commission.pdf_title(pdf) == "Driftsättning / Commissioning — Kall"


def test_faulty_site_fails_exactly_the_affected_checks(broker: Broker, tmp_path: Path):
    def faults(plant, physics):
        plant.set("genset", "model", 4242)  # not a model the DSE AMF profile describes
        plant.power("pumps", False)  # the pump controller is silent

    report = commission_site(broker, tmp_path, faults)
    st = statuses(report)
    # The genset that is not the configured model: its values are not used, so neither its mode
    # nor the tank level it reports can be vouched for; a generator that cannot be trusted is
    # not test-run.
    assert sorted(report.failed()) == sorted(
        ["device:genset", "device:pumps", "generator", "tank", "pumps"]), st
    assert st["gen_test"] == "not_checked"
    assert all(st[k] == "pass" for k in ("device:grid", "device:tank", "grid", "mqtt", "hashes",
                                         "panel", "button:next", "button:ack", "button:shop"))
    mism = report.check("device:genset")
    assert "model = 4242" in mism.measured and "32840" in mism.measured
    assert "wrong model" in mism.why_en and "fel modell" in mism.why_sv
    assert "No answer at unit 30" in report.check("device:pumps").why_en
    page = commission.render_html(report)
    assert "UNDERKÄND" in page and page.count('<tr class="fail">') == 5


def test_generator_left_in_manual_fails_the_generator_check(broker: Broker, tmp_path: Path):
    report = commission_site(broker, tmp_path,
                             lambda plant, physics: plant.set("genset", "control_mode", "manual"))
    assert report.failed() == ["generator"], statuses(report)
    c = report.check("generator")
    assert "manual" in c.measured and "Turn it to AUTO" in c.why_en and "Vrid till AUTO" in c.why_sv
    assert report.check("gen_test").status == "not_checked"


def test_cli_runs_the_simulated_site_and_exits_by_the_verdict(tmp_path: Path, capsys):
    from gateway import cli

    answers = tmp_path / "answers.toml"
    answers.write_text('technician = "Per"\npanel_ok = "nej"\ngen_test = "nej"\n')
    rc = cli.main(["commission", "--target", "sim", "--site", "config/sites/are-kall.toml",
                   "--answers", str(answers), "--out", str(tmp_path / "out"),
                   "--workdir", str(tmp_path / "w"), "--no-pdf"])
    out = capsys.readouterr().out
    assert rc == 1  # the technician did not confirm the panel
    assert "UNDERKÄND" in out and "EJ KONTROLLERAD" in out  # panel failed, no test run
    assert len(list((tmp_path / "out").glob("driftsattning-are-kall-*.html"))) == 1
