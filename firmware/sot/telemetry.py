# The telemetry session: the one task that owns the MQTT connection.
#
# Connect with the Will `status = lost` (retained), then publish `status = online`, `birth` and
# `state` (all three QoS 1 retained, so a reader that subscribes later has the site's last
# word); afterwards `state` on every change of a discrete value and every heartbeat. status,
# birth, state and crisis acknowledgements carry (`boot`, `seq`) from a message counter given at
# publish time; they are ordered per topic at the gateway.
#
# Events go through the journal on flash (sot/journal.py) the moment they happen; their `seq` is
# given there, so it is contiguous per boot whatever the link does. The session sends the journal
# in order and drops an event only when the gateway acknowledges it on `<root>/ack` after its
# commit - a PUBACK from the broker is not enough (the broker may die, the gateway may be away).
# After every (re)connect, a `rebirth` request (the gateway saw a gap) and the gateway coming back
# online, sending starts again from the oldest unacknowledged event; what was journalled before
# that moment goes out with `hist: true`. While the retained `sot/v1/gateway/status` says
# `offline`, events stay in the journal unsent. docs/mqtt.md, "Session rules".
#
# The link may be down for hours (after a blackout the router often boots after the shop), so the
# first connect is retried forever with a jittered exponential backoff. The session is clean
# (clean_session=True): the journal, not the broker's session, is what resends.
import asyncio
import gc
import io
import json
import random
import time

from sot import VERSION
from sot.journal import BODY_AT, Journal
from sot.mqtt.client import MQTTClient

ACKS_MAX = 8
LIVE_MAX = 4  # live events kept in RAM to go ahead of a replay (most are ~100-200 bytes)
SEND_BURST = 32  # journal records sent before the loop looks at state, acks and the clock
MAX_PAYLOAD = 1024  # the contract's limit for a controller message
BACKOFF_MIN_MS = 500
BACKOFF_MAX_MS = 30000


class _Out:
    """Where a message is serialised: a BytesIO and a buffer, both allocated once, instead of a
    new str of the whole payload and then its bytes for every message (on a fragmented 64 KiB
    heap a contiguous 1 KiB is the allocation most likely to fail)."""

    def __init__(self):
        self.io = io.BytesIO(MAX_PAYLOAD)
        self.mv = memoryview(bytearray(MAX_PAYLOAD))

    def dump(self, body):
        """Serialise; returns the payload (a view into the buffer) or its size when too big."""
        f = self.io
        f.seek(0)
        json.dump(body, f)
        n = f.tell()
        if n > MAX_PAYLOAD:
            return n
        f.seek(0)
        f.readinto(self.mv[:n])
        return self.mv[:n]


class Session:
    def __init__(self, cfg, hal, boot, reset_cause, site, log=print, crisis=None, health=None,
                 commands=None):
        self.cfg = cfg
        self.hal = hal
        self.boot = boot
        self.reset_cause = reset_cause
        self.site = site
        self.log = log
        self.crisis = crisis
        self.health = health or {}
        self.acks = []  # crisis message ids acknowledged by staff, waiting to be published
        self.checkin = _nothing  # the supervisor's check-in for this task
        self._out = _Out()
        m = cfg["mqtt"]
        self.root = "sot/v1/" + cfg["site"]
        self.heartbeat_ms = m["heartbeat_s"] * 1000
        self.client = MQTTClient("sot-" + cfg["site"], hal.open_connection, m["host"], m["port"],
                                 user=m.get("user"), password=m.get("password"),
                                 keepalive=m["keepalive_s"], on_message=self._on_message,
                                 ca=m.get("ca"))
        self.seq = 0
        self.bdseq = 0
        self.journal = Journal(hal.Flash(), boot, self._out.mv, m.get("journal_bytes") or 65536)
        self.gateway_online = True  # until the retained gateway/status says otherwise
        self.live_from = 0  # this boot's events from this seq on are sent live (hist false)
        # Live events raised while the journal is being replayed go ahead of the replay (a
        # generator failing at reconnect must not wait behind a day of history): a RAM copy of
        # at most LIVE_MAX of them, sent first; the replay skips them when it gets there.
        self.replaying = True  # the journal has unsent records behind the read position
        self.replay_gen = 0
        self.live = []  # [(seq, body bytes)] waiting to jump the queue
        self.sent_live = []  # this boot's seqs already sent ahead, to skip in the replay
        self.wake = asyncio.Event()
        self.rebirth = False
        self.state_dirty = True
        self.published = 0
        self.connected = False
        if crisis is not None:
            crisis.on_refuse = self._crisis_refused
        # Signed commands (sot/command.py): each result is journalled as a `cmd_result` event.
        self.commands = commands
        if commands is not None:
            commands.result_cb = self.event
            commands.rebirth_cb = self._rebirth

    # --- producers (site loop) -----------------------------------------------------------------

    def event(self, ts, etype, data):
        body = self._out.dump({"ts": ts, "type": etype, "data": data})
        seq = None if isinstance(body, int) else self.journal.append(body)
        if seq is None:
            self.log("E telemetry: event", etype, "too big for the journal; not sent")
            return
        if self.replaying and self.connected and self.gateway_online and \
                len(self.live) < LIVE_MAX:
            self.live.append((seq, bytes(body)))
        self.wake.set()

    def state_changed(self):
        self.state_dirty = True
        self.wake.set()

    def _crisis_refused(self, mid, ts, why):
        # A crisis message the controller could not take: journalled like any event, so the
        # gateway files it and the dashboard shows the refusal instead of "sent".
        self.event(self.hal.epoch(), "crisis_refused", {"id": mid, "msg_ts": ts, "why": why})

    def crisis_ack(self, mid):
        if len(self.acks) >= ACKS_MAX:
            self.acks.pop(0)
        self.acks.append(mid)
        self.wake.set()

    # --- downlink -------------------------------------------------------------------------------

    def _on_message(self, topic, payload, retained):
        # payload: a view into the MQTT client's receive buffer, valid during this call only
        if topic == self.root + "/ack":
            try:
                a = json.loads(payload)
                self.journal.ack(a["boot"], a["seq"])
            except (ValueError, KeyError, TypeError):
                self.log("W telemetry: bad ack", bytes(payload[:64]))
        elif topic == self.root + "/rebirth":
            self._rebirth()
        elif self.commands is not None and topic.startswith(self.root + "/cmd/"):
            name = topic[len(self.root) + 5:]
            if "/" not in name:  # not a result (cmd/<name>/result is the site's own)
                self.commands.receive(name, payload, self.hal.epoch())
        elif topic == "sot/v1/gateway/status":
            online = b'"offline"' not in bytes(payload)  # empty (withdrawn) counts as online
            if online and not self.gateway_online:
                self._restart_replay()
                self.live_from = self.journal.seq
                self.wake.set()
            self.gateway_online = online
        elif self.crisis is not None and topic.startswith(self.root + "/crisis/"):
            mid = topic[len(self.root) + 8:]
            if "/" not in mid and self.crisis.receive(mid, payload, self.hal.epoch()):
                self.log("I crisis: message", mid, "withdrawn" if not payload else "received")

    def _rebirth(self):
        self.rebirth = True
        self._restart_replay()  # the gateway saw a gap: send the unacknowledged again
        self.wake.set()

    # --- uplink ---------------------------------------------------------------------------------

    async def _send(self, sub, body, retain=False):
        body["boot"] = self.boot
        body["seq"] = self.seq
        if "ts" not in body:
            body["ts"] = self.hal.epoch()
        payload = self._out.dump(body)
        body.clear()  # serialised: what it held need not stay live through the PUBACK wait
        if isinstance(payload, int):
            self.log("E telemetry: payload for", sub, "is", payload, "bytes, over 1 KiB; not sent")
            return
        await self.client.publish(self.root + "/" + sub, payload, qos=1, retain=retain)
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        self.published += 1

    def _restart_replay(self):
        # From the oldest unacknowledged event again; what went ahead is sent in order this time.
        self.journal.rewind()
        self.replay_gen += 1
        self.replaying = True
        self.live = []
        self.sent_live = []

    async def _send_event(self, boot, seq, n):
        # The journal read the body (a JSON object) to mv[BODY_AT:]; the header fields go in front
        # of its first key, the prefix's last "," replacing the body's "{".
        hist = boot != self.boot or seq < self.live_from
        pre = b'{"boot":%d,"seq":%d,"hist":%s,' % (boot, seq, b"true" if hist else b"false")
        a = BODY_AT + 1 - len(pre)
        mv = self._out.mv
        mv[a:BODY_AT + 1] = pre
        await self.client.publish(self.root + "/event", mv[a:BODY_AT + n], qos=1)
        self.published += 1

    async def _birth(self):
        c = self.cfg
        j = self.journal
        devs = [{"name": d["name"], "profile": d["profile"], "unit": d["unit"], "bus": d["bus"]}
                for d in c["devices"]]
        await self._send("birth", {"fw": VERSION, "config": c["hash"], "name": c.get("name"),
                                   "municipality": c.get("municipality"), "devices": devs,
                                   "reset": self.reset_cause, "bdseq": self.bdseq,
                                   "heartbeat_s": c["mqtt"]["heartbeat_s"], "dropped": j.dropped,
                                   "journal": {"bytes": j.size(), "pending": j.pending(),
                                               "oldest": j.oldest()},
                                   "safe_mode": bool(self.health.get("safe")),
                                   "resets": self.health.get("resets", 0),
                                   "hung": self.health.get("hung")}, retain=True)

    async def _state(self):
        if self.site.mode is None:
            return  # not polled yet: there is no state to vouch for
        self.state_dirty = False
        gc.collect()  # the state is the largest message: give it an unfragmented heap
        now = self.hal.epoch()
        body = self.site.snapshot(now)
        body["ts"] = now
        await self._send("state", body, retain=True)

    async def _connect(self):
        self.bdseq += 1
        will = (self.root + "/status",
                json.dumps({"state": "lost", "boot": self.boot, "bdseq": self.bdseq}), 1, True)
        await self.client.connect(will=will, clean_session=True)
        self._restart_replay()
        self.live_from = self.journal.seq
        await self.client.subscribe(self.root + "/ack", 1)
        await self.client.subscribe(self.root + "/rebirth", 1)
        await self.client.subscribe("sot/v1/gateway/status", 1)
        if self.crisis is not None:
            await self.client.subscribe(self.root + "/crisis/+", 1)
        if self.commands is not None:
            await self.client.subscribe(self.root + "/cmd/+", 1)
        await self._send("status", {"state": "online", "bdseq": self.bdseq}, retain=True)
        await self._birth()
        await self._state()

    async def _serve(self):
        """Publish until the link dies (an exception or the client reporting it closed)."""
        last_state = time.ticks_ms()
        while self.client.connected:
            self.checkin()
            if self.rebirth:
                self.rebirth = False
                await self._birth()
                self.state_dirty = True
            burst = SEND_BURST if self.gateway_online else 0
            while burst and self.live:  # live events first (hist false, their journal seq)
                seq, body = self.live[0]
                n = len(body)
                self._out.mv[BODY_AT:BODY_AT + n] = body
                gen = self.replay_gen
                await self._send_event(self.boot, seq, n)
                if gen == self.replay_gen:  # not restarted meanwhile (a rebirth request)
                    self.live.pop(0)
                    self.sent_live.append(seq)
                burst -= 1
            while burst:
                rec = self.journal.next()
                if rec is None:
                    self.replaying = False
                    self.sent_live = []
                    break
                if rec[0] == self.boot and rec[1] in self.sent_live:
                    self.sent_live.remove(rec[1])  # went ahead already
                    continue
                await self._send_event(*rec)
                self.checkin()
                burst -= 1
            while self.acks:
                mid = self.acks[0]
                await self._send("crisis/" + mid + "/ack", {"id": mid, "by": "panel"})
                self.acks.pop(0)
            since_state = time.ticks_diff(time.ticks_ms(), last_state)
            if self.state_dirty or since_state >= self.heartbeat_ms:
                await self._state()
                last_state = time.ticks_ms()
            if burst == 0 and self.gateway_online:
                continue  # more of the journal to send
            self.wake.clear()
            wait = self.heartbeat_ms - time.ticks_diff(time.ticks_ms(), last_state)
            try:
                await asyncio.wait_for_ms(self.wake.wait(), max(50, min(wait, 1000)))
            except asyncio.TimeoutError:
                pass

    async def run(self):
        backoff = BACKOFF_MIN_MS
        while True:
            try:
                await self._connect()
                self.connected = True
                m = self.cfg["mqtt"]
                self.log("I telemetry: connected to", m["host"], m["port"], "bdseq", self.bdseq)
                backoff = BACKOFF_MIN_MS
                await self._serve()
            except Exception as e:  # noqa: BLE001 -- any failure means: drop the link, retry
                if self.connected:
                    self.log("W telemetry: link lost:", repr(e))
                elif backoff == BACKOFF_MIN_MS:
                    self.log("W telemetry: cannot connect:", repr(e))
            self.connected = False
            if self.client.connected:
                # Still up but failing (a publish timed out): close it cleanly before retrying.
                try:
                    await self.client.disconnect()
                except Exception:  # noqa: BLE001
                    pass
            # Full jitter: after a regional blackout a whole municipality reconnects at once.
            wait = BACKOFF_MIN_MS + random.getrandbits(16) % backoff
            while wait > 0:  # in steps, checking in: waiting is not hanging
                self.checkin()
                await asyncio.sleep_ms(min(wait, 1000))
                wait -= 1000
            backoff = min(backoff * 2, BACKOFF_MAX_MS)


def _nothing():
    pass
