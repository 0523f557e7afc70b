"""Names on the MQTT side: topic levels, Home Assistant ids, and what a
reading's name says it measures.

Topic and reading names come from invites and from other members' DMC
operations, so they are remote input: any text up to the DMC limits
(ops.NAME_MAX). MQTT forbids the wildcards ``+`` and ``#`` in a published
topic name and gives ``/`` a meaning (MQTT 3.1.1 §4.7); a level that held
them would be refused by the broker or land somewhere else. Unicode is
allowed by MQTT (UTF-8, §1.5.3) and is kept in topic levels. Home Assistant
ids (discovery object ids, component ids, unique ids) must be
``[a-zA-Z0-9_-]`` (HA MQTT docs, "Discovery topic").
"""
import hashlib
import re

# What may not appear in an MQTT topic level we publish: the level
# separator, both wildcards, NUL (§1.5.3) and other control characters
# (legal, but invisible in every tool that shows topics).
_MQTT_BAD = re.compile(r"[/+#\x00-\x1f\x7f]")
_HA_BAD = re.compile(r"[^A-Za-z0-9_-]")
# Longest topic level we make (a DMC name is at most 32 characters; an
# invite's topic name is longer at most by what fits an invite).
LEVEL_MAX = 64


class BadName(ValueError):
    code = "bridge_name"


def _tag(text):
    # Two names that clean up to the same text (a/b and a+b) must not share
    # a level: a short hash of the original keeps them apart.
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:6]


def mqtt_level(text):
    """A name -> one MQTT topic level: unchanged when it is already safe,
    else the unsafe characters replaced by ``_`` and a hash suffix."""
    if not isinstance(text, str) or not text:
        raise BadName("a name must be non-empty text")
    clean = _MQTT_BAD.sub("_", text)
    if clean == text and len(text) <= LEVEL_MAX:
        return text
    return "%s~%s" % (clean[:LEVEL_MAX - 7], _tag(text))


def ha_id(text):
    """A name -> a Home Assistant id ([a-zA-Z0-9_-])."""
    clean = _HA_BAD.sub("_", text)
    if clean == text and len(text) <= LEVEL_MAX:
        return text
    return "%s_%s" % (clean[:LEVEL_MAX - 7], _tag(text))


# Reading name (lower case, or one of its ``_``-separated words) -> Home
# Assistant sensor device class, unit, state class. Units are the ones HA
# expects for the class (HA sensor docs, "Device class"); what a board
# publishes under these names is in those units (firmware/app.py: "temp"
# is degrees C).
CLASSES = {
    "temp": ("temperature", "°C", "measurement"),
    "temperature": ("temperature", "°C", "measurement"),
    "hum": ("humidity", "%", "measurement"),
    "humidity": ("humidity", "%", "measurement"),
    "rh": ("humidity", "%", "measurement"),
    "bat": ("battery", "%", "measurement"),
    "batt": ("battery", "%", "measurement"),
    "battery": ("battery", "%", "measurement"),
    "vbat": ("voltage", "V", "measurement"),
    "voltage": ("voltage", "V", "measurement"),
    "volt": ("voltage", "V", "measurement"),
    "current": ("current", "A", "measurement"),
    "power": ("power", "W", "measurement"),
    "energy": ("energy", "kWh", "total_increasing"),
    "pressure": ("atmospheric_pressure", "hPa", "measurement"),
    "co2": ("carbon_dioxide", "ppm", "measurement"),
    "pm25": ("pm25", "µg/m³", "measurement"),
    "pm10": ("pm10", "µg/m³", "measurement"),
    "lux": ("illuminance", "lx", "measurement"),
    "illuminance": ("illuminance", "lx", "measurement"),
    "moisture": ("moisture", "%", "measurement"),
    "soil": ("moisture", "%", "measurement"),
    "rssi": ("signal_strength", "dBm", "measurement"),
    "wind": ("wind_speed", "m/s", "measurement"),
    "rain": ("precipitation", "mm", "total_increasing"),
}
_WORDS = re.compile(r"[_\-. ]+")
_DIGITS = re.compile(r"\d+$")


def reading_class(name, value=None):
    """(device_class, unit, state_class) for a reading, each None when the
    name says nothing. The whole name is tried first, then its words from
    the last (``soil_temp`` is a temperature, ``air_humidity`` a humidity);
    trailing digits (``temp2``) are ignored. A value that is not a number
    gets no class at all: HA refuses a numeric class on text."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return (None, None, None)
    low = name.lower()
    hit = CLASSES.get(low) or CLASSES.get(_DIGITS.sub("", low))
    if hit is None:
        for w in reversed(_WORDS.split(low)):
            hit = CLASSES.get(w) or CLASSES.get(_DIGITS.sub("", w))
            if hit is not None:
                break
    if hit is None:
        return (None, None, "measurement" if value is not None else None)
    return hit
