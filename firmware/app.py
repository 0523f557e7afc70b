"""The app API for sensor code, and the example app.

    from firmware import app
    def my_app(node):
        app.on_change(node, "garden", lambda key, value, author: print(key, value))
        app.every(node, 60, lambda: app.publish(node, "garden", "temp", read_sensor()))

``publish(topic, key, value)`` appends a reading to the log ``key`` of the
topic's replica (a DMC time-series log: every member ends up with every
reading), persists it, and queues it, sealed, for the proxy.
``on_change(topic, callback)`` calls ``callback(key, value, author)`` for
every reading applied, ours or a member's.

The example app reads the board's internal temperature every
``publish_interval_s`` and publishes it to every topic of the config.
The optional config section ``app`` may hold ``readings`` (stop after that
many readings; 0 = forever), for demos and tests.
"""
import asyncio

from firmware import platform

def publish(node, topic, key, value):
    node.publish(topic, key, value)


def on_change(node, topic, callback):
    node.on_change(topic, callback)


def every(node, seconds, fn):
    async def loop():
        while True:
            fn()
            await asyncio.sleep_ms(seconds * 1000)
    return asyncio.create_task(loop())


def temperature_app(node):
    """Publish the internal temperature (degrees C, 2 decimals) every interval."""
    limit = node.cfg.get("app", {}).get("readings", 0)   # checked by firmware/config.py
    interval_ms = node.cfg.get("publish_interval_s", 60) * 1000
    adc = node.cfg.get("sensor", {}).get("adc", 4)

    async def loop():
        # readings taken before a reboot: each went to every topic, so the
        # topic that took most says how many (a sum counted each twice)
        n = 0
        for t in node.topics:
            if t.published > n:
                n = t.published
        while limit == 0 or n < limit:
            try:
                value = int(platform.read_temperature_c(adc) * 100) / 100
            except Exception as e:
                print("upsycle: sensor read failed: %r" % (e,))
                value = None
            if value is not None:
                for t in node.topics:
                    try:
                        node.publish(t.topic, "temp", value)
                    except Exception as e:
                        print("upsycle: reading not published: %r" % (e,))
                n += 1
            await asyncio.sleep_ms(interval_ms)
        print("upsycle: app done: %d readings" % n)

    return asyncio.create_task(loop())
