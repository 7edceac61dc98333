# A stand-in for a board's `network` module, for the board HAL tests only (see machine.py here).
STA_IF = 0
PHY_LAN8720 = 1
PHY_IP101 = 2
made = []


class _Nic:
    def __init__(self):
        self.calls = []
        self.up = False
        made.append(self)

    def active(self, on=None):
        self.calls.append(("active", on))

    def isconnected(self):
        return self.up


class WLAN(_Nic):
    def __init__(self, interface=STA_IF):
        super().__init__()
        self.interface = interface

    def connect(self, ssid, key):
        self.calls.append(("connect", ssid, key))


class LAN(_Nic):
    def __init__(self, mdc=None, mdio=None, power=None, phy_type=None, phy_addr=0):
        super().__init__()
        self.args = {"mdc": mdc.num, "mdio": mdio.num,
                     "power": None if power is None else power.num,
                     "phy_type": phy_type, "phy_addr": phy_addr}
