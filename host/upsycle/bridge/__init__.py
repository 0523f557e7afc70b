"""Bridges from a site's private topics to the tools people already run.

``upsycle bridge mqtt`` (upsycle.commands.bridge) is a member of the topics
it bridges: it subscribes through a proxy like any node, opens each
publication with its member keys, applies the DMC operation to its own
replica and publishes the readings to an MQTT broker, with Home Assistant
discovery. docs/mqtt-bridge.md is the walkthrough.

| module | holds |
|---|---|
| codec.py | the host codec (upsycle.group_codec) with saves held until a flush and the signer of each body |
| names.py | MQTT-safe topic levels, Home Assistant ids, reading name -> device class/unit/state class |
| discovery.py | the JSON payloads: readings, device discovery, removal |
| broker.py | the paho-mqtt 2.x client run from asyncio: PUBACK futures, reconnects, last will |
| state.py | what the bridge keeps per topic on disk: replica, devices announced, outbox |
| loop.py | the bridge itself: deliveries -> replica -> broker -> acknowledgement; set commands |
| config.py | command-line flags and the optional TOML file |
"""
