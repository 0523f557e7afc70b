# upsycle: start the node. Any error ends in safe mode with the REPL
# reachable; nothing here resets the board, so a fault cannot boot-loop.
try:
    from firmware import node
    cfg = node.start()
    del node   # boot only: the runtime lets the GC free it (runtime.BOOT_ONLY)
    if cfg is not None:
        from firmware import app, runtime
        runtime.run(cfg, app.temperature_app)
except Exception as e:
    import sys
    print("upsycle: SAFE MODE: the firmware failed to start:")
    sys.print_exception(e)
