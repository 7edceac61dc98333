"""The plant simulator, read the way the controller reads it: RTU over the controller-side pty.

Values are decoded here with pymodbus' own client converters, not with the plant's encoder, so
a wrong word order or scale in the simulator cannot hide behind a matching decoder.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest
import serial
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer.rtu import FramerRTU

from gateway.config import Device, Point, Site, load_profiles, load_sites
from hil_tests.rig.links import TO_CONTROLLER, PtyLink
from hil_tests.rig.plant import Plant, PlantThread
from hil_tests.rig.scenario import PlantPhysics

pytestmark = [pytest.mark.hil, pytest.mark.needs()]

BUS = "rs485"
DATATYPES = {"u16": ModbusSerialClient.DATATYPE.UINT16, "s16": ModbusSerialClient.DATATYPE.INT16,
             "u32": ModbusSerialClient.DATATYPE.UINT32, "s32": ModbusSerialClient.DATATYPE.INT32,
             "f32": ModbusSerialClient.DATATYPE.FLOAT32}
# Short delays keep the scenario tests around a second or two each.
DELAYS = {"start_delay_s": 0.3, "crank_s": 0.4, "return_delay_s": 0.3, "cooldown_s": 0.4}
TICK_S = 0.05


@pytest.fixture(scope="module")
def site() -> Site:
    return load_sites()["are-kall"]


@pytest.fixture
def rig(site: Site) -> Iterator[tuple[Plant, PlantThread]]:
    plant = Plant(site, tick_s=TICK_S)
    runner = PlantThread(plant).start()
    try:
        yield plant, runner
    finally:
        runner.stop()


@pytest.fixture
def client(rig: tuple[Plant, PlantThread]) -> Iterator[ModbusSerialClient]:
    yield from _client(rig[0].port(BUS))


def _client(port: str) -> Iterator[ModbusSerialClient]:
    c = ModbusSerialClient(port, baudrate=9600, timeout=0.3, retries=0)
    assert c.connect()
    try:
        yield c
    finally:
        c.close()


def read(client: ModbusSerialClient, fc: int, address: int, count: int, unit: int) -> list[int]:
    fn = client.read_holding_registers if fc == 3 else client.read_input_registers
    r = fn(address, count=count, device_id=unit)
    assert not r.isError(), f"unit {unit} fc {fc} {address}+{count}: {r}"
    return list(r.registers)


def decode(point: Point, regs: list[int]) -> Any:
    if point.type == "str":
        text = ModbusSerialClient.convert_from_registers(regs, ModbusSerialClient.DATATYPE.STRING)
        assert isinstance(text, str)
        return text.rstrip("\0 ")
    order: Literal["big", "little"] = "little" if point.word_order == "little" else "big"
    raw: Any = ModbusSerialClient.convert_from_registers(regs, DATATYPES[point.type],
                                                         word_order=order)
    if point.bits is not None:
        raw = (raw >> point.bits[0]) & ((1 << point.bits[1]) - 1)
    if point.enum is not None:
        return point.enum[raw]
    return raw * point.scale


def read_point(client: ModbusSerialClient, plant: Plant, device: str, name: str) -> Any:
    dev = plant.site.device(device)
    p = dev.profile.point(name)
    return decode(p, read(client, p.function, p.address, p.count, dev.unit))


def wait_for(probe: Callable[[], Any], want: Callable[[Any], bool], timeout: float) -> float:
    """Poll until want(probe()) holds; returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        value = probe()
        if want(value):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"still {value!r} after {timeout} s")
        time.sleep(0.02)


# --- registers -------------------------------------------------------------------------------


def test_every_device_reads_its_profile_sim_values(rig, client):
    plant, _ = rig
    checked = 0
    for dev in plant.site.devices:
        # Read exactly the blocks the controller reads, gaps included.
        for fc, start, count, _slow in dev.profile.blocks():
            regs = read(client, fc, start, count, dev.unit)
            for p in dev.profile.points:
                if p.function != fc or not start <= p.address < start + count:
                    continue
                on_wire = decode(p, regs[p.address - start:p.address - start + p.count])
                # A label, or a number within half a step of the register's resolution.
                want = p.sim if isinstance(p.sim, str) else \
                    pytest.approx(p.sim, abs=abs(p.scale) / 2 + 1e-9)
                assert on_wire == want, (dev.name, p.name)
                assert plant.get(dev.name, p.name) == want, (dev.name, p.name)
                checked += 1
    assert checked == sum(len(d.profile.points) for d in plant.site.devices)


def test_reads_outside_the_map_are_refused(rig, client):
    plant, _ = rig
    genset = plant.site.device("genset")
    r = client.read_holding_registers(767, count=2, device_id=genset.unit)
    assert r.isError() and r.exception_code == 2
    r = client.write_register(768, 5, device_id=genset.unit)
    assert r.isError() and r.exception_code == 1


def test_set_changes_what_the_controller_reads(rig, client):
    plant, _ = rig
    plant.set("genset", "fuel_level", 42)
    plant.set("genset", "coolant_temp", -12)
    plant.set("genset", "battery_voltage", 12.6)
    plant.set("genset", "engine_state", "cooling")
    plant.set("genset", "control_mode", "off")
    plant.set("grid", "voltage_l2", 207.5)
    plant.set("tank", "diesel_litres", None)
    assert read_point(client, plant, "genset", "fuel_level") == 42
    assert read_point(client, plant, "genset", "coolant_temp") == -12
    assert read_point(client, plant, "genset", "battery_voltage") == pytest.approx(12.6)
    assert read_point(client, plant, "genset", "engine_state") == "cooling"
    # "off" is both 0 and 7 in the DSE map: the first raw value is written.
    assert read(client, 3, 772, 1, 10) == [0]
    assert read_point(client, plant, "grid", "voltage_l2") == pytest.approx(207.5)
    assert read(client, 3, 0, 2, 20) == [0xFFFF, 0xFFFF]
    assert plant.get("tank", "diesel_litres") is None
    plant.set("genset", "fuel_level", None)
    assert read(client, 3, 1027, 1, 10) == [0xFFFF]
    plant.set_raw("genset", 1060, 3, [0x0001, 0x0002])
    assert read(client, 3, 1060, 2, 10) == [1, 2]
    assert plant.get("genset", "mains_voltage_l1") == pytest.approx(6553.8)
    with pytest.raises(ValueError):
        plant.set("genset", "engine_state", "exploded")
    with pytest.raises(ValueError):
        plant.set_raw("genset", 767, 3, [1])


def test_powered_off_device_is_silent(rig, client):
    plant, _ = rig
    plant.power("genset", False)
    t0 = time.monotonic()
    with pytest.raises(ModbusIOException):
        client.read_holding_registers(768, count=2, device_id=10)
    assert time.monotonic() - t0 >= 0.25  # a timeout, not an exception response
    assert read_point(client, plant, "grid", "frequency") == pytest.approx(50.0)
    assert read_point(client, plant, "tank", "petrol_litres") == 9200
    # A unit id nobody has is silent too (pymodbus alone would answer exception 4).
    with pytest.raises(ModbusIOException):
        client.read_holding_registers(0, count=1, device_id=99)
    plant.power("genset", True)
    assert read_point(client, plant, "genset", "model") == 32840


# --- scenarios -------------------------------------------------------------------------------


def _physics(plant: Plant, runner: PlantThread, **kw: Any) -> PlantPhysics:
    return runner.call(PlantPhysics, plant, plant.site, **{**DELAYS, **kw})


def _state(client: ModbusSerialClient, plant: Plant) -> str:
    return read_point(client, plant, "genset", "engine_state")


def test_grid_loss_starts_the_genset_and_burns_fuel(rig, client):
    plant, runner = rig
    # 36000x: 3.4 l/h from a 400 l tank is 8.5 % per real second.
    physics = _physics(plant, runner, time_scale=36000)
    battery = read_point(client, plant, "genset", "battery_voltage")
    hours = read_point(client, plant, "genset", "run_hours")
    runner.call(physics.grid_lost)
    t_start = wait_for(lambda: _state(client, plant), lambda s: s == "starting", 2)
    assert DELAYS["start_delay_s"] - 0.05 <= t_start <= DELAYS["start_delay_s"] + 0.3
    assert read_point(client, plant, "grid", "voltage_l1") == 0
    assert read_point(client, plant, "grid", "frequency") == 0
    assert read_point(client, plant, "genset", "mains_voltage_l1") == 0
    assert read_point(client, plant, "genset", "mains_frequency") == 0
    assert read_point(client, plant, "genset", "battery_voltage") < battery - 1  # cranking
    t_run = t_start + wait_for(lambda: _state(client, plant), lambda s: s == "running", 2)
    total = DELAYS["start_delay_s"] + DELAYS["crank_s"]
    assert total - 0.05 <= t_run <= total + 0.3
    assert read_point(client, plant, "genset", "engine_speed") == 1500
    assert read_point(client, plant, "genset", "gen_voltage_l1") == pytest.approx(230.0)
    assert read_point(client, plant, "genset", "gen_frequency") == pytest.approx(50.0)
    assert read_point(client, plant, "genset", "battery_voltage") == pytest.approx(battery)
    time.sleep(0.5)
    fuel = read_point(client, plant, "genset", "fuel_level")
    assert 70 <= fuel < 80
    assert physics.fuel_level == pytest.approx(fuel, abs=0.5)
    assert read_point(client, plant, "genset", "run_hours") > hours + 2
    assert physics.engine_state == "running" and not physics.grid_present


def test_failed_start_ends_stopped(rig, client):
    plant, runner = rig
    physics = _physics(plant, runner)
    runner.call(physics.fail_next_start, True)
    runner.call(physics.grid_lost)
    wait_for(lambda: _state(client, plant), lambda s: s == "starting", 2)
    t = wait_for(lambda: _state(client, plant), lambda s: s != "starting", 2)
    assert t >= DELAYS["crank_s"] - 0.15
    assert _state(client, plant) == "stopped"
    assert read_point(client, plant, "genset", "engine_speed") == 0
    assert read_point(client, plant, "genset", "gen_voltage_l1") == 0
    assert physics.failed_start
    # Latched: no new attempt while the grid stays away.
    time.sleep(DELAYS["start_delay_s"] + 0.2)
    assert _state(client, plant) == "stopped"


def test_grid_return_cools_down_then_stops(rig, client):
    plant, runner = rig
    physics = _physics(plant, runner)
    runner.call(physics.grid_lost)
    wait_for(lambda: _state(client, plant), lambda s: s == "running", 2)
    runner.call(physics.grid_restored)
    # The mains values from before the outage come back at once.
    wait_for(lambda: read_point(client, plant, "grid", "voltage_l1"),
             lambda v: v == pytest.approx(231.0), 0.5)
    assert read_point(client, plant, "genset", "mains_voltage_l1") == pytest.approx(230.0)
    assert read_point(client, plant, "grid", "total_power") == pytest.approx(8200.0)
    t_cool = wait_for(lambda: _state(client, plant), lambda s: s == "cooling", 2)
    assert DELAYS["return_delay_s"] - 0.05 <= t_cool <= DELAYS["return_delay_s"] + 0.3
    assert read_point(client, plant, "genset", "engine_speed") == 1500
    t_stop = wait_for(lambda: _state(client, plant), lambda s: s == "stopped", 2)
    assert DELAYS["cooldown_s"] - 0.1 <= t_stop <= DELAYS["cooldown_s"] + 0.3
    assert read_point(client, plant, "genset", "engine_speed") == 0
    assert read_point(client, plant, "genset", "gen_frequency") == 0


def test_manual_mode_does_not_start_on_grid_loss(rig, client):
    plant, runner = rig
    physics = _physics(plant, runner)
    runner.call(physics.set_control_mode, "manual")
    assert read_point(client, plant, "genset", "control_mode") == "manual"
    runner.call(physics.grid_lost)
    time.sleep(DELAYS["start_delay_s"] + DELAYS["crank_s"] + 0.2)
    assert _state(client, plant) == "stopped"
    assert read_point(client, plant, "grid", "voltage_l1") == 0


# --- links and lifecycle ---------------------------------------------------------------------


def _rtu(unit: int, pdu: bytes) -> bytes:
    frame = bytes([unit]) + pdu
    return frame + FramerRTU.compute_CRC(frame).to_bytes(2, "big")


def test_paced_link_takes_wire_time(site):
    # Raw bytes, not the pymodbus client: its sync reader adds ~8 ms of its own at 9600 baud.
    request = _rtu(10, bytes([3]) + (1059).to_bytes(2, "big") + (2).to_bytes(2, "big"))
    with PtyLink(baud=9600, name="paced") as link:
        with PlantThread(Plant(site, {BUS: link})), serial.Serial(link.device_path,
                                                                  timeout=0.5) as port:
            times = []
            for _ in range(5):
                t0 = time.monotonic()
                port.write(request)
                answer = port.read(9)
                times.append(time.monotonic() - t0)
                assert answer == _rtu(10, bytes([3, 4, 0x01, 0xF4, 0x00, 0x00]))
        # 8-byte request + 9-byte response, 10 bits a byte at 9600 baud: 17.7 ms on the wire.
        assert 0.0177 <= statistics.median(times) < 0.025
        assert link.bytes_to_plant == 5 * 8 and link.bytes_to_controller == 5 * 9
    assert link.closed


def test_a_link_that_falls_behind_still_delivers_one_request_at_a_time(site):
    """On a loaded machine the link's pump can be late and read two requests in one go (the
    controller gave up on the first and sent the next). On a real line they are separate
    frames, apart in time; the pymodbus server answers only one frame per read, so the link
    must hand them over one at a time. Every request gets its answer, in order."""
    first = _rtu(10, bytes([3]) + (1059).to_bytes(2, "big") + (2).to_bytes(2, "big"))
    second = _rtu(1, bytes([4, 0, 0, 0, 6]))
    stalled = threading.Event()

    def stall(direction: str, data: bytes) -> bytes:
        if direction != TO_CONTROLLER and not stalled.is_set():
            stalled.set()
            time.sleep(0.3)  # the link is late with the first request: the second queues up
        return data

    with PtyLink(name="late", on_bytes=stall) as link:
        with PlantThread(Plant(site, {BUS: link})), serial.Serial(link.device_path,
                                                                  timeout=2) as port:
            port.write(first)
            time.sleep(0.1)
            port.write(second)
            answers = port.read(9 + 17)
    assert answers[:9] == _rtu(10, bytes([3, 4, 0x01, 0xF4, 0x00, 0x00])), answers.hex()
    assert answers[9:12] == bytes([1, 4, 12]) and len(answers) == 26, answers.hex()


def test_link_hook_can_drop_answers(rig, client):
    plant, _ = rig
    link = plant.links[BUS]
    link.on_bytes = lambda direction, data: b"" if direction == TO_CONTROLLER else data
    with pytest.raises(ModbusIOException):
        client.read_input_registers(0, count=2, device_id=1)
    link.on_bytes = lambda direction, data: data
    assert read_point(client, plant, "grid", "voltage_l1") == pytest.approx(231.0)


def test_stopping_releases_descriptors_and_threads(site):
    fds = set(os.listdir("/proc/self/fd"))
    threads = set(threading.enumerate())
    plant = Plant(site)
    runner = PlantThread(plant).start()
    port = plant.port(BUS)
    assert plant.ports() == {BUS: port}
    runner.call(PlantPhysics, plant, site)
    for c in _client(port):
        read(c, 4, 70, 2, 1)
    runner.stop()
    assert set(os.listdir("/proc/self/fd")) == fds
    assert set(threading.enumerate()) == threads
    assert not os.path.exists(port)


@pytest.mark.parametrize("profile_id", sorted(load_profiles()))
def test_every_profile_gets_a_simulator_for_free(site: Site, profile_id: str):
    """A profile alone (no code) is enough for the plant to serve it: each point reads back as
    its `sim` value through a real Modbus client."""
    import dataclasses

    profile = load_profiles()[profile_id]
    dev = Device(name="dut", profile=profile, bus=BUS, unit=profile.default_unit)
    plant = Plant(dataclasses.replace(site, devices=(dev,)), tick_s=TICK_S)
    with PlantThread(plant):
        for c in _client(plant.port(BUS)):
            for fc, start, count, _slow in profile.blocks():
                regs = read(c, fc, start, count, dev.unit)
                for p in profile.points:
                    inside = start <= p.address < start + count
                    if p.function == fc and inside and p.sim is not None:
                        got = decode(p, regs[p.address - start:p.address - start + p.count])
                        want = p.sim if isinstance(p.sim, str) else \
                            pytest.approx(p.sim, abs=abs(p.scale) / 2 + 1e-9)
                        assert got == want, (profile_id, p.name)
