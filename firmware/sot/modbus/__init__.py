# Modbus RTU for the field buses: `rtu` builds and checks frames (no I/O), `master` owns one bus
# and runs one request/response transaction at a time over an asyncio UART from the HAL.
