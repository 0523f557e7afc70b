# Freeze the node firmware into a MicroPython image (MicroPython's manifest
# format, docs "MicroPython manifest files"). Frozen bytecode runs from
# flash: importing it costs the heap only the module's objects, not its
# bytecode, qstrs and constants (tools/bench/bench_node.py --only modules
# shows what .mpy imports cost on a board without it). Build commands:
# docs/node.md, "Freezing the firmware into the image".
#
# It names exactly the modules `upsycle flash` copies to /lib
# (tests/host/test_manifest.py checks). /boot.py, /main.py and
# /config.json stay files on the board's flash.
include("$(PORT_DIR)/boards/manifest.py")

# The protocol, all of it: shared_protocol/ holds only board code.
package("shared_protocol", base_path="..")

# The firmware package without this file and firmware/root/.
package("firmware", files=("__init__.py", "app.py", "ble_link.py", "config.py", "core.py", "lan_link.py", "node.py",
                           "plain_link.py", "platform.py", "preload.py", "proxy_all.py", "proxy_link.py", "runtime.py",
                           "topic.py", "topic_load.py"), base_path="..")
