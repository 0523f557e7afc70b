# upsycle: start the node. Any error ends in safe mode with the REPL
# reachable; nothing here resets the board, so a fault cannot boot-loop.
try:
    from firmware import node
    node.start()
except Exception as e:
    import sys
    print("upsycle: SAFE MODE: the firmware failed to start:")
    sys.print_exception(e)
