import sys

from speculators_core.cli.main import main

sys.exit(main())
