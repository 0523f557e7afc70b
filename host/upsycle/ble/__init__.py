"""Bluetooth LE on the host: the proxy's BLE links (central.py, bleak as
central), the bleak backend for the virtual radio (backend.py) and the
virtual radio medium itself (medium.py). docs/ble.md."""
