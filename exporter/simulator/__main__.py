"""``python -m exporter.simulator [--port 8080] [--demo]``: serve the simulator until Ctrl-C."""

import sys

from exporter.simulator.cli import main

sys.exit(main())
