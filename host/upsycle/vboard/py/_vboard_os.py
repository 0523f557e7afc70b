# os for the virtual board: filled in by _vboard.init()
