import sys

from localrun.runner import main

sys.exit(main())
