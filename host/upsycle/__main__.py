import sys

from upsycle.cli import main

sys.exit(main())
