# MQTT 3.1.1 for the controller: `from sot.mqtt.client import MQTTClient, MQTTError`.
# packets.py encodes and frames, link.py runs one connection, client.py is the session; the
# session layer above (connect, birth, reconnect with backoff) and the topics of docs/mqtt.md
# live outside this package.
