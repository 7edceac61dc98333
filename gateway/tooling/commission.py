"""`sot commission`: the on-site checklist a technician runs after installing a controller.

Host tooling, not part of the gateway service. Evidence comes from where the municipality will
see it later: the controller's `birth` and `state` at the municipality's broker (MQTT), and the
controller's console for what has no MQTT trace (each panel button). What only a person can see
(the panel's picture, the generator running on site) the technician confirms; in the tests a
scripted answer file stands in for the technician and the plant harness for the site.

Targets:
- `sim`: the real firmware on the MicroPython unix port against the simulated plant (the HIL
  rig), its console being the firmware's output; the rig presses the panel's buttons and opens
  the simulated mains breaker for the generator test run.
- `board`: a controller on site. Its console is read on `--board-port` (pyserial); the technician
  presses the buttons and opens the mains breaker when asked, and reads the generator's voltage
  and frequency off the genset controller's display.

Each check ends `pass`, `fail` or `not_checked`, with what was measured and a plain-language
reason in Swedish and English. The report is HTML (gateway/tooling/templates/commission.html,
every value escaped) and PDF (printed by headless Chromium). docs/commissioning.md is the
technician's guide.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from gateway import config
from gateway.tooling import compiler

TEMPLATE = Path(__file__).parent / "templates" / "commission.html"
FIRMWARE_VERSION_FILE = config.REPO_ROOT / "firmware" / "sot" / "__init__.py"
BUTTONS = ("next", "ack", "shop")
BUTTON_NAMES = {"next": ("NÄSTA", "Next"), "ack": ("OK / KVITTERA", "OK / Acknowledge"),
                "shop": ("BUTIK", "Shop")}
SETTLE_S = 30.0  # longest wait for every device to be decided (offline takes 3 polls or 5 s)
GEN_SAMPLES = 3  # readings of the running generator, one a second


@dataclass
class Check:
    key: str
    sv: str  # what is checked, Swedish
    en: str
    status: str = "not_checked"  # pass | fail | not_checked
    measured: str = ""
    why_sv: str = ""
    why_en: str = ""

    def set(self, status: str, measured: str, why_sv: str, why_en: str) -> Check:
        self.status, self.measured, self.why_sv, self.why_en = status, measured, why_sv, why_en
        return self


@dataclass
class Report:
    site: config.Site
    target: str
    technician: str
    started: float
    checks: list[Check] = field(default_factory=list)
    finished: float | None = None

    def check(self, key: str) -> Check:
        return next(c for c in self.checks if c.key == key)

    def failed(self) -> list[str]:
        return [c.key for c in self.checks if c.status == "fail"]

    @property
    def passed(self) -> bool:
        return not self.failed() and all(c.status == "pass" for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"site": self.site.id, "target": self.target, "technician": self.technician,
                "started": self.started, "finished": self.finished, "passed": self.passed,
                "checks": [c.__dict__ for c in self.checks]}


# --- the technician (or a script standing in for one) ------------------------------------------


class Answers:
    """Questions to the technician. `scripted` (from `--answers FILE`, TOML) answers by key;
    a key it lacks is asked on the terminal, or, without one, answered "no"."""

    def __init__(self, scripted: dict[str, Any] | None = None,
                 ask: Callable[[str], str] | None = None) -> None:
        self.scripted = dict(scripted or {})
        self._ask = ask if ask is not None else (input if sys.stdin.isatty() else None)

    def get(self, key: str, prompt: str, default: str = "no") -> str:
        if key in self.scripted:
            return str(self.scripted[key]).strip()
        if self._ask is None:
            return default
        return self._ask(prompt + " ").strip()

    def yes(self, key: str, prompt: str) -> bool:
        return self.get(key, prompt + " [j/n]").lower() in ("j", "ja", "y", "yes", "true", "1")


def load_answers(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)


# --- what the controller says at the broker -----------------------------------------------------


class Observer:
    """Subscribes to the site's topics at the broker and keeps what arrives."""

    def __init__(self, site_id: str, host: str, port: int, user: str | None = None,
                 password: str | None = None, ca: str | None = None) -> None:
        """`ca`: the broker's CA certificate; TLS verified against it (docs/mqtt.md, "TLS")."""
        import ssl

        import paho.mqtt.client as mqtt

        self.root = f"sot/v1/{site_id}"
        self.lock = threading.Lock()
        self.birth: dict[str, Any] | None = None
        self.state: dict[str, Any] | None = None
        self.events: list[dict[str, Any]] = []
        self.states: list[dict[str, Any]] = []
        ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"sot-commission-{os.getpid()}")
        if user is not None:
            self.c.username_pw_set(user, password)
        if ca is not None:
            self.c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.c.on_message = self._on_message
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [(f"{self.root}/birth", 1), (f"{self.root}/state", 1), (f"{self.root}/event", 1)])
        self.c.on_subscribe = lambda c, u, mid, rcs, p: ready.set()
        self.c.connect(host, port, keepalive=30)
        self.c.loop_start()
        if not ready.wait(10):
            self.close()
            raise ConnectionError(f"no answer from the broker at {host}:{port} "
                                  "(address, port, user and password?)")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        sub = msg.topic.rsplit("/", 1)[-1]
        with self.lock:
            if sub == "birth":
                self.birth = body
            elif sub == "state":
                self.state = body
                self.states.append(body)
            elif sub == "event":
                self.events.append(body)

    def rebirth(self) -> None:
        """Ask the controller for birth and state again (a login allowed to publish there)."""
        self.c.publish(f"{self.root}/rebirth", json.dumps({"ts": int(time.time()),
                                                           "why": "commission"}), qos=1)

    def wait(self, check: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = check()
            if got:
                return got
            time.sleep(0.2)
        with self.lock:
            return check()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


# --- targets -----------------------------------------------------------------------------------


class SimTarget:
    """The real firmware (unix port) against the simulated plant: the rig of hil_tests/.

    `prepare(plant, physics)` runs before the firmware starts (tests set faults there)."""

    name = "sim"

    def __init__(self, site: config.Site, workdir: Path, *, mqtt_host: str, mqtt_port: int,
                 login: dict[str, str] | None = None,
                 prepare: Callable[[Any, Any], None] | None = None,
                 physics: dict[str, Any] | None = None) -> None:
        from hil_tests.rig.sitesim import SimulatedSite

        # exercise=True: the simulated controller runs the site as configured, test-run schedule
        # included; without it its config hash is not the site's and the hash check fails.
        self.sim = SimulatedSite(
            site, workdir, mqtt_host=mqtt_host, mqtt_port=mqtt_port, heartbeat_s=5,
            keepalive_s=10, login=login, exercise=True,
            physics=physics or {"start_delay_s": 1.0, "crank_s": 2.0, "cooldown_s": 2.0,
                                "return_delay_s": 1.0})
        self.prepare = prepare

    def start(self) -> None:
        if self.prepare is not None:
            self.prepare(self.sim.plant, self.sim.physics)
        self.sim.start()

    def stop(self) -> None:
        self.sim.stop()

    def console(self) -> str:
        return self.sim.firmware.log() if self.sim.firmware is not None else ""

    def press(self, button: str, answers: Answers) -> None:
        self.sim.press(button)

    def mains_breaker(self, closed: bool, answers: Answers) -> None:
        if closed:
            self.sim.physics.grid_restored()
        else:
            self.sim.physics.grid_lost()

    def generator_output(self, answers: Answers) -> tuple[Any, Any]:
        genset = self.sim.physics.genset
        return (self.sim.plant.get(genset, "gen_voltage_l1"),
                self.sim.plant.get(genset, "gen_frequency"))


class BoardTarget:
    """A controller on site: its console on `port` (pyserial, 115200 8N1), read in a thread.
    Not run on this machine (no board): docs/commissioning.md says what is untested."""

    name = "board"

    def __init__(self, port: str, baud: int = 115200) -> None:
        self.port = port
        self.baud = baud
        self._buf: list[str] = []
        self._stop = threading.Event()
        self._serial: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        import serial

        self._serial = serial.Serial(self.port, self.baud, timeout=0.2)
        self._thread = threading.Thread(target=self._read, name="console", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            data = self._serial.read(256)
            if data:
                self._buf.append(data.decode("utf-8", "replace"))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._serial is not None:
            self._serial.close()

    def console(self) -> str:
        return "".join(self._buf)

    def press(self, button: str, answers: Answers) -> None:
        sv, en = BUTTON_NAMES[button]
        answers.get(f"press_{button}", f"Tryck på {sv} och sedan Enter / Press {en}, then Enter:")

    def mains_breaker(self, closed: bool, answers: Answers) -> None:
        if closed:
            answers.get("breaker_closed", "Slå till nätbrytaren, Enter / Close the mains "
                        "breaker, Enter:")
        else:
            answers.get("breaker_open", "Slå ifrån nätbrytaren (simulerat nätbortfall), Enter / "
                        "Open the mains breaker (simulated mains failure), Enter:")

    def generator_output(self, answers: Answers) -> tuple[Any, Any]:
        def num(key: str, prompt: str) -> float | None:
            try:
                return float(answers.get(key, prompt).replace(",", "."))
            except ValueError:
                return None
        return (num("gen_v", "Elverkets spänning L1 enligt dess display (V) / Generator "
                    "voltage L1 (V):"),
                num("gen_f", "Elverkets frekvens (Hz) / Generator frequency (Hz):"))


# --- the checklist -----------------------------------------------------------------------------


def firmware_version() -> str:
    for line in FIRMWARE_VERSION_FILE.read_text().splitlines():
        if line.startswith("VERSION"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return "?"


def _fmt(x: Any, unit: str = "") -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        x = int(x) if x.is_integer() else round(x, 1)
    return f"{x} {unit}".strip()


def new_checks(site: config.Site) -> list[Check]:
    checks = [Check(f"device:{d.name}", f"Enhet {d.name} ({d.profile.title}, adress {d.unit}) "
                    "svarar och är rätt enhet",
                    f"Device {d.name} ({d.profile.title}, unit {d.unit}) answers and is the "
                    "right device") for d in site.devices]
    checks += [
        Check("grid", "Elnätsmätaren: spänning och frekvens rimliga",
              "Grid meter: voltage and frequency plausible"),
        Check("generator", "Elverket i AUTO och får startas på distans",
              "Generator in AUTO and allowed to start remotely"),
        Check("tank", "Elverkets tank: nivå rimlig och liter", "Generator tank: level plausible, "
              "litres"),
        Check("pumps", "Pumparna syns", "Pumps seen"),
        Check("panel", "Panelen visar översikten (testbild) korrekt",
              "Panel shows the overview (test picture) correctly"),
    ]
    checks += [Check(f"button:{b}", f"Knappen {BUTTON_NAMES[b][0]} fungerar",
                     f"Button {BUTTON_NAMES[b][1]} works") for b in BUTTONS]
    checks += [
        Check("mqtt", "Kommunens MQTT-server tar emot styrenhetens birth",
              "The municipality's MQTT broker receives the controller's birth"),
        Check("hashes", "Firmware och konfiguration är de avsedda (hash)",
              "Firmware and configuration are the intended ones (hash)"),
        Check("gen_test", "Provkörning av elverket: startar, stabil spänning och frekvens, "
              "stannar", "Generator test run: starts, stable voltage and frequency, stops"),
    ]
    return checks


def mismatches(console: str, events: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """{device: (point, value read)} of identity mismatches. The controller prints each on its
    console ("E bus B device D identity mismatch: P = V - no values, no writes"); a
    device_mismatch event says the same when a device changes into a mismatch while running."""
    import re

    found: dict[str, tuple[str, str]] = {}
    for m in re.finditer(r"device (\S+) identity mismatch: (\S+) = (.*?) - no values", console):
        found[m.group(1)] = (m.group(2), m.group(3))
    for e in events:
        d = e.get("data") or {}
        if e.get("type") == "device_mismatch" and d.get("device"):
            found[d["device"]] = (str(d.get("point")), str(d.get("got")))
    return found


def _device_checks(report: Report, state: dict[str, Any] | None,
                   mism: dict[str, tuple[str, str]]) -> None:
    devices = (state or {}).get("devices") or {}
    for d in report.site.devices:
        c = report.check(f"device:{d.name}")
        ident = d.profile.identity
        expect = ", ".join(f"{k} = {v if not isinstance(v, list) else ' / '.join(map(str, v))}"
                           for k, v in ident.items())
        status = devices.get(d.name)
        if state is None:
            c.set("not_checked", "–", "Styrenheten skickade inget läge.",
                  "The controller sent no state.")
        elif status == "online":
            m = "svarar" + (f"; identitet {expect}" if ident else "")
            c.set("pass", m, "Svarar" + (" med förväntad identitet." if ident else
                                         "; profilen har inga identitetsregister."),
                  "Answers" + (" with the expected identity." if ident else
                               "; its profile has no identity registers."))
        elif status == "mismatch":
            point, got = mism.get(d.name, ("?", "?"))
            m = f"{point} = {got}; väntat / expected {expect}"
            c.set("fail", m, "Svarar men är inte den enhet profilen beskriver: fel modell eller "
                  "fel adress. Styrenheten använder inga värden från den.",
                  "Answers but is not the device its profile describes: wrong model or wrong "
                  "address. The controller uses none of its values.")
        elif status == "offline":
            c.set("fail", "svarar inte / no answer",
                  f"Inget svar på adress {d.unit}: kontrollera matning, RS-485-kabel (A/B), "
                  "adress och hastighet.",
                  f"No answer at unit {d.unit}: check power, RS-485 wiring (A/B), address and "
                  "baud rate.")
        else:
            c.set("fail", _fmt(status), "Styrenheten har inte kunnat avgöra enhetens läge.",
                  "The controller could not tell the device's status.")


def _unusable(state: dict[str, Any], device_kind: str, report: Report) -> str | None:
    names = [d.name for d in report.site.devices if d.profile.kind == device_kind]
    for n in names:
        s = (state.get("devices") or {}).get(n)
        if s != "online":
            return n
    return None


def _plant_checks(report: Report, state: dict[str, Any] | None) -> None:
    site = report.site
    grid_c, gen_c, tank_c, pumps_c = (report.check(k) for k in ("grid", "generator", "tank",
                                                                  "pumps"))
    if state is None:
        for c in (grid_c, gen_c, tank_c, pumps_c):
            c.set("not_checked", "–", "Styrenheten skickade inget läge.",
                  "The controller sent no state.")
        return
    # grid
    g = state.get("grid") or {}
    v, f = g.get("v"), g.get("f")
    lo = site.grid["nominal_v"] * (1 - site.grid["tolerance_pct"] / 100)
    hi = site.grid["nominal_v"] * (1 + site.grid["tolerance_pct"] / 100)
    m = f"{_fmt(v, 'V')}, {_fmt(f, 'Hz')} (källa / source {g.get('src')})"
    bad = _unusable(state, "grid_meter", report)
    if bad:
        grid_c.set("fail", m, f"Elnätsmätaren ({bad}) ger inga värden.",
                   f"The grid meter ({bad}) gives no values.")
    elif not isinstance(v, int | float) or not isinstance(f, int | float):
        grid_c.set("fail", m, "Ingen spänning eller frekvens uppmätt.",
                   "No voltage or frequency measured.")
    elif not (lo <= v <= hi and site.grid["f_min"] <= f <= site.grid["f_max"]):
        grid_c.set("fail", m, f"Utanför {lo:.0f}–{hi:.0f} V, {site.grid['f_min']}–"
                   f"{site.grid['f_max']} Hz: fel mätarkoppling, fas eller skalning?",
                   f"Outside {lo:.0f}–{hi:.0f} V, {site.grid['f_min']}–{site.grid['f_max']} Hz: "
                   "wrong meter wiring, phase or scaling?")
    else:
        grid_c.set("pass", m, f"Inom {lo:.0f}–{hi:.0f} V och {site.grid['f_min']}–"
                   f"{site.grid['f_max']} Hz.", f"Within {lo:.0f}–{hi:.0f} V and "
                   f"{site.grid['f_min']}–{site.grid['f_max']} Hz.")
    # generator mode / remote start
    gs = state.get("genset") or {}
    mode, ready = gs.get("mode"), gs.get("ready")
    yn = {True: "ja / yes", False: "nej / no", None: "–"}.get(ready, "–")
    m = f"läge / mode {_fmt(mode)}, fjärrstart tillåten / remote start allowed: {yn}"
    bad = _unusable(state, "genset", report)
    if bad:
        gen_c.set("fail", m, f"Elverkets styrenhet ({bad}) ger inga värden: läget kan inte "
                  "avläsas.", f"The genset controller ({bad}) gives no values: its mode cannot "
                  "be read.")
    elif mode != "auto":
        gen_c.set("fail", m, f"Elverket står i {_fmt(mode).upper()}, inte AUTO: det startar inte "
                  "vid strömavbrott. Vrid till AUTO.", f"The generator is in {_fmt(mode).upper()}"
                  ", not AUTO: it will not start on a power cut. Turn it to AUTO.")
    elif ready is not True:
        gen_c.set("fail", m, "I AUTO men fjärrstart är inte tillåten (larm eller inställning i "
                  "elverkets styrenhet).", "In AUTO but remote start is not allowed (an alarm or "
                  "a setting in the genset controller).")
    else:
        gen_c.set("pass", m, "I AUTO; fjärrstart tillåten.", "In AUTO; remote start allowed.")
    # tank
    fuel = state.get("fuel") or {}
    pct, litres = fuel.get("pct"), fuel.get("litres")
    tanks = state.get("tanks")
    m = f"{_fmt(pct, '%')} = {_fmt(litres, 'l')} av / of {_fmt(site.genset['tank_litres'], 'l')}"
    if tanks:
        m += "; stationens tankar / station tanks " + ", ".join(
            f"{k} {_fmt(val, 'l')}" for k, val in sorted(tanks.items()))
    band = site.genset.get("fuel_trusted_pct", [5, 95])
    bad = _unusable(state, "genset", report)
    if bad:
        tank_c.set("fail", m, "Nivån kommer från elverkets styrenhet, som inte ger värden.",
                   "The level comes from the genset controller, which gives no values.")
    elif not isinstance(pct, int | float):
        tank_c.set("fail", m, "Ingen nivå: givaren saknas, är trasig eller visar 'ej tillgänglig'.",
                   "No level: the sender is missing, broken or reads 'not available'.")
    elif not band[0] <= pct <= band[1]:
        tank_c.set("fail", m, f"Nivån ligger utanför det troliga ({band[0]}–{band[1]} %): "
                   "kontrollera givaren och kalibreringen.", f"The level is outside the plausible "
                   f"band ({band[0]}–{band[1]} %): check the sender and its calibration.")
    else:
        tank_c.set("pass", m, "Rimlig nivå; kontrollera litern mot pejlstickan.",
                   "Plausible level; compare the litres with the dipstick.")
    # pumps
    pumps = state.get("pumps")
    bad = _unusable(state, "pump", report)
    if not any(d.profile.kind == "pump" for d in site.devices):
        pumps_c.set("not_checked", "–", "Platsen har ingen pumpstyrning.",
                    "The site has no pump controller.")
    elif bad or not pumps:
        pumps_c.set("fail", "–", f"Pumpstyrningen ({bad or '?'}) svarar inte: inga pumpar syns.",
                    f"The pump controller ({bad or '?'}) does not answer: no pumps seen.")
    elif not pumps.get("total"):
        pumps_c.set("fail", "0", "Pumpstyrningen rapporterar inga pumpar.",
                    "The pump controller reports no pumps.")
    else:
        pumps_c.set("pass", f"{pumps.get('available')} av / of {pumps.get('total')} tillgängliga "
                    "/ available", "Pumparna syns.", "The pumps are seen.")


def _mqtt_checks(report: Report, birth: dict[str, Any] | None, expect_hash: str) -> None:
    c, h = report.check("mqtt"), report.check("hashes")
    fw = firmware_version()
    if birth is None:
        c.set("fail", "ingen birth / no birth", "Inget meddelande från styrenheten kom fram till "
              "kommunens MQTT-server: kontrollera nätverk, serveradress, användare och lösenord.",
              "Nothing from the controller reached the municipality's broker: check the "
              "network, broker address, user and password.")
        h.set("not_checked", "–", "Kräver styrenhetens birth.", "Needs the controller's birth.")
        return
    c.set("pass", f"birth: fw {birth.get('fw')}, config {birth.get('config')}, "
          f"reset {birth.get('reset')}", "Styrenhetens birth kom fram.",
          "The controller's birth arrived.")
    m = (f"config {birth.get('config')} (väntat / expected {expect_hash}); fw {birth.get('fw')} "
         f"(väntat / expected {fw})")
    if birth.get("config") != expect_hash:
        h.set("fail", m, "Styrenheten kör en annan konfiguration än platsens: kör `sot firmware "
              "deploy` igen.", "The controller runs another configuration than the site's: run "
              "`sot firmware deploy` again.")
    elif birth.get("fw") != fw:
        h.set("fail", m, "Styrenheten kör en annan firmware-version.",
              "The controller runs another firmware version.")
    else:
        h.set("pass", m, "Samma konfiguration och firmware som i verktyget.",
              "Same configuration and firmware as in the tool.")


def _panel_checks(report: Report, target: Any, answers: Answers, timeout: float) -> None:
    site = report.site
    c = report.check("panel")
    if answers.yes("panel_ok", f"Visar panelen platsnamnet '{site.name}', klockan och NÄTSTRÖM i "
                   "grönt? / Does the panel show the site name, the clock and GRID POWER in "
                   "green?"):
        c.set("pass", "bekräftat / confirmed", "Teknikern har bekräftat bilden.",
              "The technician confirmed the picture.")
    else:
        c.set("fail", "ej bekräftat / not confirmed", "Teknikern bekräftade inte bilden: "
              "kontrollera displayens kabel och `[panel]` i platsens konfiguration.",
              "The technician did not confirm the picture: check the display's cable and "
              "`[panel]` in the site config.")
    for b in BUTTONS:
        c = report.check(f"button:{b}")
        before = target.console().count(f"I panel: button {b}")
        target.press(b, answers)
        deadline = time.monotonic() + timeout
        seen = False
        while time.monotonic() < deadline:
            if target.console().count(f"I panel: button {b}") > before:
                seen = True
                break
            time.sleep(0.1)
        if seen:
            c.set("pass", "tryckning sedd på konsolen / press seen on the console",
                  "Styrenheten tog emot tryckningen.", "The controller received the press.")
        else:
            c.set("fail", f"ingen tryckning inom {timeout:.0f} s / no press within "
                  f"{timeout:.0f} s", "Styrenheten såg ingen tryckning: kontrollera knappens "
                  "kabel och stift i `[board]`.", "The controller saw no press: check the "
                  "button's wiring and its pin in `[board]`.")
    if "button:shop" in [c.key for c in report.checks if c.status == "pass"]:
        target.press("shop", answers)  # the shop button toggles: leave the shop open


def _generator_test(report: Report, obs: Observer, target: Any, answers: Answers) -> None:
    site = report.site
    c = report.check("gen_test")
    if report.check("generator").status != "pass":
        c.set("not_checked", "–", "Elverket är inte redo för fjärrstart; provkörningen gjordes "
              "inte.", "The generator is not ready for a remote start; no test run was made.")
        return
    if not answers.yes("gen_test", "Provköra elverket nu? Nätbrytaren slås ifrån en stund. / "
                       "Run the generator now? The mains breaker is opened for a while."):
        c.set("not_checked", "–", "Teknikern valde att inte provköra.",
              "The technician chose not to run the test.")
        return
    n0 = len(obs.states)

    def engine(*want: str) -> bool:
        return any((s.get("genset") or {}).get("state") in want for s in obs.states[n0:])

    t0 = time.monotonic()
    target.mains_breaker(False, answers)
    limit = site.genset.get("start_timeout_s", 30) + 15
    try:
        if not obs.wait(lambda: engine("running"), limit):
            c.set("fail", f"inte igång efter {limit} s / not running after {limit} s",
                  "Elverket startade inte vid nätbortfall.",
                  "The generator did not start on the mains failure.")
            return
        started = time.monotonic() - t0
        samples = []
        for _ in range(GEN_SAMPLES):
            time.sleep(1)
            samples.append(target.generator_output(answers))
    finally:
        target.mains_breaker(True, answers)
    stopped = obs.wait(
        lambda: ((obs.state or {}).get("genset") or {}).get("state") == "stopped", 60)
    vs = [v for v, _ in samples if isinstance(v, int | float)]
    fs = [f for _, f in samples if isinstance(f, int | float)]
    m = (f"igång efter / running after {started:.0f} s; "
         + "; ".join(f"{_fmt(v, 'V')} {_fmt(f, 'Hz')}" for v, f in samples)
         + ("; stannade / stopped" if stopped else "; stannade inte / did not stop"))
    lo = site.grid["nominal_v"] * (1 - site.grid["tolerance_pct"] / 100)
    hi = site.grid["nominal_v"] * (1 + site.grid["tolerance_pct"] / 100)
    steady = (len(vs) == len(fs) == GEN_SAMPLES and all(lo <= v <= hi for v in vs)
              and all(site.grid["f_min"] <= f <= site.grid["f_max"] for f in fs)
              and max(vs) - min(vs) <= 0.05 * site.grid["nominal_v"] and max(fs) - min(fs) <= 1)
    if not steady:
        c.set("fail", m, "Spänning eller frekvens var inte stabil inom gränserna under "
              "provkörningen.", "Voltage or frequency was not steady within the limits during "
              "the run.")
    elif not stopped:
        c.set("fail", m, "Elverket stannade inte efter att nätet kom tillbaka.",
              "The generator did not stop after the grid came back.")
    else:
        c.set("pass", m, "Startade, gav stabil spänning och frekvens och stannade när nätet kom "
              "tillbaka.", "Started, gave steady voltage and frequency, and stopped when the grid "
              "came back.")


def run(site: config.Site, target: Any, *, mqtt_host: str, mqtt_port: int,
        mqtt_login: dict[str, str] | None = None, answers: Answers | None = None,
        settle_s: float = SETTLE_S, button_timeout_s: float = 5.0,
        log: Callable[[str], None] = print) -> Report:
    """Run every check against `target` (SimTarget or BoardTarget) and return the report."""
    answers = answers or Answers()
    who = answers.get("technician", "Teknikerns namn / Technician's name:", default="–")
    report = Report(site, target.name, who or "–", time.time())
    report.checks = new_checks(site)
    expect_hash = compiler.compile_site(site)["hash"]
    obs = Observer(site.id, mqtt_host, mqtt_port, **(mqtt_login or {}))
    try:
        target.start()
        try:
            log("sot commission: väntar på styrenheten / waiting for the controller")
            obs.rebirth()
            birth = obs.wait(lambda: obs.birth, settle_s)
            if birth is None:
                obs.rebirth()
                birth = obs.wait(lambda: obs.birth, 10)

            def decided() -> dict[str, Any] | None:
                s = obs.state
                if not s:
                    return None
                devs = s.get("devices") or {}
                if any(devs.get(d.name) in (None, "unknown") for d in site.devices):
                    return None
                return s

            state = obs.wait(decided, settle_s) or obs.state
            time.sleep(1.0)  # a state published with the last decision may still be on its way
            state = obs.state or state
            mism = {n for n, st in ((state or {}).get("devices") or {}).items()
                    if st == "mismatch"}
            if mism:  # what the device said: the console (or a device_mismatch event)
                obs.wait(lambda: mism <= set(mismatches(target.console(), obs.events)), 10)
            _device_checks(report, state, mismatches(target.console(), obs.events))
            _plant_checks(report, state)
            _mqtt_checks(report, birth, expect_hash)
            log("sot commission: panelen och knapparna / the panel and its buttons")
            _panel_checks(report, target, answers, button_timeout_s)
            log("sot commission: provkörning / generator test run")
            _generator_test(report, obs, target, answers)
        finally:
            target.stop()
    finally:
        obs.close()
    report.finished = time.time()
    return report


# --- the report --------------------------------------------------------------------------------

STATUS = {"pass": ("GODKÄND", "pass"), "fail": ("UNDERKÄND", "fail"),
          "not_checked": ("EJ KONTROLLERAD", "not checked")}


def render_html(report: Report) -> str:
    e = html.escape
    rows = []
    for c in report.checks:
        sv, en = STATUS[c.status]
        rows.append(
            f'<tr class="{e(c.status)}"><td><b>{e(c.sv)}</b><br><i>{e(c.en)}</i></td>'
            f'<td class="st">{e(sv)}<br><i>{e(en)}</i></td><td>{e(c.measured)}</td>'
            f"<td>{e(c.why_sv)}<br><i>{e(c.why_en)}</i></td></tr>")
    counts = {k: sum(1 for c in report.checks if c.status == k) for k in STATUS}
    site = report.site
    verdict = ("GODKÄND — alla kontroller godkända / PASSED — every check passed" if report.passed
               else "INTE GODKÄND — se kontrollerna nedan / NOT PASSED — see the checks below")
    fmt = "%Y-%m-%d %H:%M UTC"
    return Template(TEMPLATE.read_text()).substitute(
        title=e(f"Driftsättning / Commissioning — {site.name}"),
        site_name=e(site.name), site_id=e(site.id), municipality=e(site.municipality),
        technician=e(report.technician), target=e(report.target),
        started=e(time.strftime(fmt, time.gmtime(report.started))),
        finished=e(time.strftime(fmt, time.gmtime(report.finished or report.started))),
        verdict=e(verdict), verdict_class="pass" if report.passed else "fail",
        n_pass=counts["pass"], n_fail=counts["fail"], n_not=counts["not_checked"],
        rows="\n".join(rows))


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("no Chromium: run scripts/bootstrap.sh --browser "
                            "(apt-get install chromium)")


def print_pdf(html_path: Path, pdf_path: Path, timeout: float = 120) -> Path:
    """Print the HTML report to PDF with headless Chromium (A4, the page's own CSS)."""
    with _chromium_profile() as profile:
        subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                        f"--user-data-dir={profile}", "--no-pdf-header-footer",
                        f"--print-to-pdf={pdf_path}", html_path.resolve().as_uri()],
                       check=True, capture_output=True, timeout=timeout)
    if not pdf_path.exists():
        raise RuntimeError(f"Chromium wrote no {pdf_path}")
    return pdf_path


def screenshot(html_path: Path, png_path: Path, size: str = "1100,1400",
               timeout: float = 120) -> Path:
    with _chromium_profile() as profile:
        subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                        f"--user-data-dir={profile}", "--hide-scrollbars",
                        f"--window-size={size}", f"--screenshot={png_path}",
                        html_path.resolve().as_uri()],
                       check=True, capture_output=True, timeout=timeout)
    return png_path


class _chromium_profile:
    """A throw-away Chromium profile directory, so runs never share (or lock) one."""

    def __enter__(self) -> str:
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="sot-chromium-")
        return self.dir

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def write_report(report: Report, out_dir: Path, pdf: bool = True) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y%m%d-%H%M", time.gmtime(report.started))
    stem = f"driftsattning-{report.site.id}-{when}"
    paths = {"html": out_dir / f"{stem}.html", "json": out_dir / f"{stem}.json"}
    paths["html"].write_text(render_html(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(report.to_json(), ensure_ascii=False, indent=1))
    if pdf:
        paths["pdf"] = print_pdf(paths["html"], out_dir / f"{stem}.pdf")
    return paths


def pdf_pages(data: bytes) -> int:
    """Pages of a PDF (its /Type /Page objects); raises ValueError when it is not a PDF."""
    import re

    if not data.startswith(b"%PDF-") or b"%%EOF" not in data[-64:]:
        raise ValueError("not a complete PDF file")
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", data))


def pdf_title(data: bytes) -> str | None:
    """The document title Chromium wrote into the PDF's info dictionary (the HTML <title>)."""
    import re

    m = re.search(rb"/Title\s*<([0-9A-Fa-f]+)>", data)
    if m:
        raw = bytes.fromhex(m.group(1).decode())
        return raw[2:].decode("utf-16-be") if raw.startswith(b"\xfe\xff") else raw.decode()
    m = re.search(rb"/Title\s*\(([^)]*)\)", data)
    return m.group(1).decode("latin-1") if m else None
